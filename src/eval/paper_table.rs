//! The paper's view of a fine-tune against its base: one row per model, execution pass@1 per
//! benchmark beside the CodeArena result (its Table 4 puts EvalPlus and MultiPL-E next to
//! CodeArena to show where they disagree) — `OUT/comparison.md` and `OUT/comparison.json`.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRow {
    pub model: String,
    /// (benchmark, pass@1 as a fraction), in column order.
    pub pass_at_1: Vec<(String, f64)>,
    /// The CodeArena cell against the opponent (win % / tie %), where judged.
    pub codearena: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// What the CodeArena column measures (e.g. "win/tie % vs base").
    pub codearena_column: String,
    pub rows: Vec<ModelRow>,
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let benches: Vec<&str> = self
            .rows
            .first()
            .map(|r| r.pass_at_1.iter().map(|(b, _)| b.as_str()).collect())
            .unwrap_or_default();
        let mut out = String::from("| model |");
        for b in &benches {
            out.push_str(&format!(" {b} |"));
        }
        out.push_str(&format!(" CodeArena ({}) |\n|---|", self.codearena_column));
        out.push_str(&"---|".repeat(benches.len() + 1));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |", r.model));
            for b in &benches {
                match r.pass_at_1.iter().find(|(x, _)| x == b) {
                    Some((_, v)) => out.push_str(&format!(" {:.1} |", 100.0 * v)),
                    None => out.push_str(" – |"),
                }
            }
            out.push_str(&format!(" {} |\n", r.codearena.as_deref().unwrap_or("–")));
        }
        out.push_str("\nExecution columns: greedy pass@1 (%). CodeArena: the judged games' win % / tie %.\n");
        out
    }

    /// Writes `comparison.md` and `comparison.json` into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::io::write_atomic(&dir.join("comparison.md"), self.markdown().as_bytes())?;
        crate::io::write_atomic(
            &dir.join("comparison.json"),
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_model_with_every_benchmark_and_the_arena_cell() {
        let c = Comparison {
            codearena_column: "win/tie % vs base".into(),
            rows: vec![
                ModelRow {
                    model: "tuned".into(),
                    pass_at_1: vec![("humaneval+".into(), 0.5), ("mbpp+".into(), 0.25)],
                    codearena: Some("41.2/10.5".into()),
                },
                ModelRow {
                    model: "base".into(),
                    pass_at_1: vec![("humaneval+".into(), 0.375), ("mbpp+".into(), 0.3)],
                    codearena: None,
                },
            ],
        };
        let md = c.markdown();
        assert!(
            md.starts_with("| model | humaneval+ | mbpp+ | CodeArena (win/tie % vs base) |\n|---|---|---|---|\n"),
            "{md}"
        );
        assert!(md.contains("| tuned | 50.0 | 25.0 | 41.2/10.5 |"), "{md}");
        assert!(md.contains("| base | 37.5 | 30.0 | – |"), "{md}");
    }
}
