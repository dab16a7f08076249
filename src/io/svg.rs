//! What the project's hand-written SVG charts share (`loss.svg`, the CodeArena report chart):
//! text escaping and the document's opening tag.

use std::fmt::Write;

/// `text` with `&`, `<`, `>` and `"` escaped (safe in XML text and double-quoted attributes).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Appends the opening `<svg>` tag of a `width × height` document (sans-serif, 12 px text).
pub fn open(out: &mut String, width: f64, height: f64) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_opens_a_document() {
        assert_eq!(xml_escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
        let mut s = String::new();
        open(&mut s, 720.0, 400.0);
        assert!(
            s.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="400" viewBox="0 0 720 400""#),
            "{s}"
        );
    }
}
