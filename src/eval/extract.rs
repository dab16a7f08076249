//! The code in a chat model's reply, the way EvalPlus takes it from instruct models (its
//! `sanitize`), approximated without a Python parser:
//!
//! 1. **The block.** Of the reply's fenced code blocks (```` ```lang ```` … ```` ``` ````, an
//!    unclosed last fence running to the end), those tagged with the problem's language or
//!    untagged count; among them the longest that defines the entry point (`def NAME(` in
//!    Python, `NAME(` elsewhere), else the longest. A reply with no fence is taken whole.
//! 2. **Python only: definitions, not a script.** Top-level statements other than imports,
//!    `def`, `class`, decorators and assignments (with everything indented under them) are
//!    dropped — the `print(...)` calls, example asserts and `if __name__ == "__main__":` blocks
//!    models append, which would otherwise run (or fail) before the benchmark's tests.
//!    Comments and blank lines stay. A top-level multi-line string that is not an assignment's
//!    value counts as a statement and is dropped line by line until the next kept statement.

use super::language::Language;

/// A fenced block: its tag (lower case, empty when none) and its text.
fn blocks(reply: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in reply.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("```") {
            match open.take() {
                Some((tag, body)) => out.push((tag, body.join("\n"))),
                None => {
                    let tag = rest.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
                    open = Some((tag, Vec::new()));
                }
            }
        } else if let Some((_, body)) = open.as_mut() {
            body.push(line);
        }
    }
    if let Some((tag, body)) = open {
        out.push((tag, body.join("\n")));
    }
    out
}

/// The code of `reply` for a problem in `lang` whose function is `entry_point`.
pub fn extract(reply: &str, lang: Language, entry_point: Option<&str>) -> String {
    let all = blocks(reply);
    let mut ours: Vec<&String> = all
        .iter()
        .filter(|(tag, _)| tag.is_empty() || lang.fence().contains(&tag.as_str()))
        .map(|(_, body)| body)
        .collect();
    if ours.is_empty() && !all.is_empty() {
        // Every block has another tag: the model may have mislabelled it.
        ours = all.iter().map(|(_, b)| b).collect();
    }
    let code = if ours.is_empty() {
        reply.to_string()
    } else {
        let defines = |b: &&String| match (entry_point, lang) {
            (Some(f), Language::Python) => b.contains(&format!("def {f}(")),
            (Some(f), _) => b.contains(&format!("{f}(")) || b.contains(&format!("{f} (")),
            (None, _) => true,
        };
        let longest = |v: Vec<&String>| v.into_iter().max_by_key(|b| b.len()).cloned();
        let with: Vec<&String> = ours.iter().copied().filter(defines).collect();
        longest(with).or_else(|| longest(ours)).unwrap_or_default()
    };
    match lang {
        Language::Python => definitions_only(&code),
        _ => code,
    }
}

/// Python: keeps imports, definitions, decorators and assignments at the top level (with
/// their indented bodies), comments and blank lines; drops other top-level statements.
pub fn definitions_only(code: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut keeping = true;
    for line in code.lines() {
        let top = !line.starts_with([' ', '\t']) && !line.trim().is_empty();
        if top && !line.trim_start().starts_with('#') {
            // A closing bracket or string delimiter continues the statement above.
            let continues = line.starts_with([')', ']', '}']) || line.starts_with("\"\"\"") || line.starts_with("'''");
            if !continues {
                keeping = is_kept(line);
            }
        }
        if keeping || line.trim().is_empty() || (top && line.trim_start().starts_with('#')) {
            out.push(line);
        }
    }
    out.join("\n").trim_end().to_string()
}

fn is_kept(line: &str) -> bool {
    let l = line.trim_end();
    for kw in ["import ", "from ", "def ", "async def ", "class ", "@"] {
        if l.starts_with(kw) {
            return true;
        }
    }
    if l.starts_with("if __name__") {
        return false;
    }
    // An assignment: NAME (, NAME)* [: annotation] = value, not a comparison.
    let Some(eq) = l.find('=') else {
        return false;
    };
    let (lhs, rest) = l.split_at(eq);
    if rest.starts_with("==") {
        return false;
    }
    let lhs = lhs
        .trim_end_matches(['+', '-', '*', '/', '|', '&', '%', '^', ':', '<', '>'])
        .trim();
    let lhs = lhs.split(':').next().unwrap_or("").trim();
    !lhs.is_empty()
        && lhs.split(',').all(|n| {
            let n = n.trim();
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '[' || c == ']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_python_block_defining_the_entry_point_wins() {
        let reply = "Here it is:\n```python\ndef helper(x):\n    return x\n```\nAnd the solution:\n```python\nimport math\n\ndef add(a, b):\n    return a + b\n\nprint(add(1, 2))\nassert add(2, 2) == 4\n```\nDone.";
        assert_eq!(
            extract(reply, Language::Python, Some("add")),
            "import math\n\ndef add(a, b):\n    return a + b"
        );
    }

    #[test]
    fn main_guards_are_dropped_and_assignments_kept() {
        let code = "MOD = 10**9 + 7\nx: int = 3\n\ndef f(n):\n    if n == 0:\n        return 1\n    return n\n\nif __name__ == \"__main__\":\n    print(f(3))\n    f(4)\n";
        assert_eq!(
            definitions_only(code),
            "MOD = 10**9 + 7\nx: int = 3\n\ndef f(n):\n    if n == 0:\n        return 1\n    return n\n".trim_end()
        );
        assert!(!is_kept("x == 3"));
        assert!(is_kept("a, b = 1, 2"));
        assert!(is_kept("total += 1"));
        assert!(!is_kept("print(f(3))"));
    }

    #[test]
    fn no_fence_means_the_whole_reply_and_other_languages_keep_their_block() {
        assert_eq!(
            extract("def f():\n    return 1", Language::Python, Some("f")),
            "def f():\n    return 1"
        );
        let reply = "```cpp\n#include <vector>\nint f() { return 1; }\nint main() { return f(); }\n```";
        assert_eq!(
            extract(reply, Language::Cpp, Some("f")),
            "#include <vector>\nint f() { return 1; }\nint main() { return f(); }"
        );
        // An unclosed fence runs to the end; a block tagged with another language is used when
        // there is nothing else.
        assert_eq!(
            extract("```js\nfunction f() {}", Language::JavaScript, Some("f")),
            "function f() {}"
        );
        assert_eq!(extract("```text\necho hi\n```", Language::Bash, None), "echo hi");
    }
}
