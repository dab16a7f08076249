//! `syncoder data inspect --show N`: the first N samples as training sees them — the rendered
//! text with the trained text marked, then every token's position, id, whether it is trained
//! on, and the text it covers, side by side. The first thing to look at when a chat template or
//! `data.mask` misbehaves. (Offsets that are not character boundaries, which no byte-level
//! tokenizer gives, show as nothing rather than panic.)

use super::record::Record;
use super::sample::{Dropped, Rendered, SampleBuilder};
use super::shard::{resolve_sources, ShardLines};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// How trained text is marked in the text view.
pub struct Marks {
    pub open: &'static str,
    pub close: &'static str,
}

/// Plain-text marks (pipes, files).
pub const BRACKETS: Marks = Marks {
    open: "⟦", close: "⟧"
};
/// Terminal marks: trained text in bold green.
pub const COLOR: Marks = Marks {
    open: "\x1b[1;32m",
    close: "\x1b[0m",
};

/// Writes the first `n` samples of `sources` to `out`; returns how many it wrote. Bad records
/// are reported in place and skipped.
pub fn show(
    sources: &[PathBuf],
    builder: &SampleBuilder,
    n: usize,
    marks: &Marks,
    out: &mut dyn Write,
) -> Result<usize> {
    let mut shown = 0;
    writeln!(
        out,
        "data.mask = \"{}\"; trained text between {}…{}; T = trained token",
        builder.mask.as_str(),
        marks.open,
        marks.close
    )?;
    for file in resolve_sources(sources)? {
        for line in ShardLines::open(&file)? {
            if shown >= n {
                return Ok(shown);
            }
            let line = line?;
            let at = format!("{}:{}", file.display(), line.line);
            let record = match Record::parse(&line.text) {
                Ok(r) => r,
                Err(e) => {
                    writeln!(out, "\n{at}: bad record: {e}")?;
                    continue;
                }
            };
            let parts = builder.parts(&record);
            for part in 0..parts.min(n - shown) {
                shown += 1;
                let what = match parts {
                    1 => format!("sample {shown} · {at}"),
                    _ => format!("sample {shown} · {at} · part {}/{parts}", part + 1),
                };
                let rendered = match builder.render(&record, part) {
                    Ok(r) => r,
                    Err(e) => {
                        writeln!(out, "\n── {what} ──\nerror: {e:#}")?;
                        continue;
                    }
                };
                let fate = match builder.fit(&record, rendered.ids.clone(), rendered.mask.clone()) {
                    Ok(s) if s.ids.len() < rendered.ids.len() => format!("truncated to {}", s.ids.len()),
                    Ok(_) => "kept".to_string(),
                    Err(Dropped::TooLong) => format!("dropped: longer than {}", builder.max_seq_len),
                    Err(Dropped::NoSupervisedTokens) => "dropped: no trained token".to_string(),
                };
                let trained = rendered.mask.iter().filter(|&&m| m).count();
                let id = record.id.as_deref().map(|i| format!(" · id {i:?}")).unwrap_or_default();
                writeln!(
                    out,
                    "\n── {what}{id} · {} tokens, {trained} trained · {fate} ──",
                    rendered.ids.len()
                )?;
                write_text(out, &rendered, marks)?;
                write_table(out, &rendered, builder.max_seq_len)?;
            }
        }
    }
    Ok(shown)
}

/// The text with each run of trained tokens between the marks.
fn write_text(out: &mut dyn Write, r: &Rendered, marks: &Marks) -> Result<()> {
    let mut s = String::with_capacity(r.text.len() + 64);
    let (mut at, mut inside) = (0usize, false);
    for (&(a, b), &m) in r.offsets.iter().zip(&r.mask) {
        if a > at {
            s.push_str(r.text.get(at..a).unwrap_or_default());
            at = a;
        }
        if m != inside {
            s.push_str(if m { marks.open } else { marks.close });
            inside = m;
        }
        // Tokens that split one character share its offsets: the character is written once.
        if b > at {
            s.push_str(r.text.get(at..b).unwrap_or_default());
            at = b;
        }
    }
    if inside {
        s.push_str(marks.close);
    }
    s.push_str(r.text.get(at..).unwrap_or_default());
    writeln!(out, "{s}")?;
    Ok(())
}

/// One row per token: position, id, trained, the text it covers (escaped).
fn write_table(out: &mut dyn Write, r: &Rendered, max_len: usize) -> Result<()> {
    writeln!(out, "{:>6} {:>8} T  text", "pos", "id")?;
    for (pos, ((&id, &(a, b)), &m)) in r.ids.iter().zip(&r.offsets).zip(&r.mask).enumerate() {
        let cut = if pos >= max_len { "  (cut)" } else { "" };
        let text = r.text.get(a..b).unwrap_or("");
        writeln!(out, "{pos:>6} {id:>8} {}  {text:?}{cut}", if m { "T" } else { " " })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_runs_are_marked_once_and_shared_characters_written_once() {
        let r = Rendered {
            text: "ab€d".into(),
            ids: vec![1, 2, 3, 4, 5],
            // "€" is three bytes split over two tokens that both cover it.
            offsets: vec![(0, 1), (1, 2), (2, 5), (2, 5), (5, 6)],
            mask: vec![false, true, true, true, false],
        };
        let mut out = vec![];
        write_text(&mut out, &r, &BRACKETS).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a⟦b€⟧d\n");
    }
}
