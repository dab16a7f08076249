//! The CodeArena report: per-question results grouped overall and by category, language and
//! difficulty into statistics, rendered as JSON-serialisable data, Markdown and a standalone SVG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::arena::score::{question_outcome, GameVerdict, Outcome};
use crate::arena::stats::{bootstrap_bt_ci, bootstrap_score_ci, bradley_terry, Tally};
use crate::io::svg::{self, xml_escape};

/// Group name of questions without a difficulty (and of questions without a language).
pub const UNKNOWN: &str = "unknown";

/// The judged games of one question, with its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionResult {
    pub id: String,
    pub category: String,
    /// The official sub-category, where the questions give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<String>,
    pub languages: Vec<String>,
    pub difficulty: Option<String>,
    pub games: Vec<GameVerdict>,
}

/// Everything the report is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    pub model: String,
    pub opponent: String,
    pub judge: String,
    /// Questions judged in both games.
    pub results: Vec<QuestionResult>,
    /// Questions skipped because the prompt was too long.
    pub skipped_too_long: usize,
    /// Questions without both games judged (not in `results`).
    pub missing: usize,
    /// Bootstrap resamples for the confidence intervals.
    pub resamples: usize,
    /// Seed of the bootstrap generator (the same seed is used for every group).
    pub seed: u64,
    /// The share of parsed verdicts below which a group's rates are shown as "n/a".
    #[serde(default = "default_min_valid_share")]
    pub min_valid_share: f64,
    /// The model's scored answers cut at the token limit (`finish_reason: length`).
    #[serde(default)]
    pub truncated_answers: usize,
    /// The same of the opponent, when it is a model with an answers file.
    #[serde(default)]
    pub opponent_truncated: usize,
}

fn default_min_valid_share() -> f64 {
    MIN_VALID_SHARE
}

/// Statistics of one group of questions. Rates are fractions in 0..=1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub name: String,
    pub n: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub win_rate: f64,
    pub tie_rate: f64,
    pub loss_rate: f64,
    /// (wins + ½ ties) / n.
    pub score: f64,
    /// The leaderboard's cell: win % / tie %, each rounded to one decimal as the official
    /// `round(x * 100, 1)` rounds it (`"41.2/10.5"`).
    #[serde(default)]
    pub wt: String,
    /// 95% bootstrap CI of the score, `[lo, hi]`.
    pub score_ci: [f64; 2],
    /// Bradley–Terry win probability; `None` when the group has no parsable game.
    pub bt_win_prob: Option<f64>,
    /// 95% bootstrap CI of the Bradley–Terry win probability.
    pub bt_ci: Option<[f64; 2]>,
    /// Games of the group (two per question).
    #[serde(default)]
    pub games: usize,
    /// Of those, games whose verdict could not be parsed (they count as ties).
    #[serde(default)]
    pub unparsable_games: usize,
    /// Enough games have a verdict for the rates to mean anything (else they show as "n/a").
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

/// The default share of games with a parsed verdict below which a group's score is shown as
/// "n/a": unparsable games count 0 points, so many of them pull every score towards a tie.
pub const MIN_VALID_SHARE: f64 = 0.9;

impl GroupStats {
    /// Whether enough of the group's games have a verdict for its rates to mean anything.
    pub fn reliable(&self) -> bool {
        self.available
    }
}

/// The full report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub opponent: String,
    pub judge: String,
    /// What the `wt` cells measure, named as the leaderboard names it.
    #[serde(default)]
    pub metric: String,
    pub overall: GroupStats,
    pub by_category: Vec<GroupStats>,
    /// Questions with a sub-category, grouped by it (empty when none has one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_sub_category: Vec<GroupStats>,
    pub by_language: Vec<GroupStats>,
    pub by_difficulty: Vec<GroupStats>,
    /// Questions scored (`results.len()`).
    pub questions: usize,
    pub skipped_too_long: usize,
    pub missing: usize,
    /// Games whose judge reply was unparsable (they count 0 points).
    pub unparsable_games: usize,
    /// See `ReportInput::min_valid_share`.
    #[serde(default = "default_min_valid_share")]
    pub min_valid_share: f64,
    /// See `ReportInput::truncated_answers`.
    #[serde(default)]
    pub truncated_answers: usize,
    #[serde(default)]
    pub opponent_truncated: usize,
    pub resamples: usize,
    pub seed: u64,
    /// Where the questions came from (`QuestionSource::describe`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions_source: Option<String>,
}

/// The leaderboard's questions: the 397 of CodeArena minus those of 1024 words or more.
pub const LEADERBOARD_N: usize = 392;

/// `"W/T"`: win and tie rates as percentages rounded to one decimal, half to even on the exact
/// binary value (what Python's `round(x * 100, 1)` gives).
pub fn wt_cell(win_rate: f64, tie_rate: f64) -> String {
    format!("{:.1}/{:.1}", win_rate * 100.0, tie_rate * 100.0)
}

/// Statistics of the questions in `members`.
pub fn group_stats(
    name: &str,
    members: &[&QuestionResult],
    resamples: usize,
    seed: u64,
    min_valid_share: f64,
) -> GroupStats {
    let outcomes: Vec<Outcome> = members.iter().map(|q| question_outcome(&q.games)).collect();
    let games: Vec<Vec<GameVerdict>> = members.iter().map(|q| q.games.clone()).collect();
    let tally = Tally::from_outcomes(&outcomes);
    let (lo, hi) = bootstrap_score_ci(&outcomes, resamples, seed);
    let n_games: usize = games.iter().map(Vec::len).sum();
    let n_unparsable = games.iter().flatten().filter(|g| g.label.is_none()).count();
    GroupStats {
        name: name.to_string(),
        wt: wt_cell(tally.win_rate(), tally.tie_rate()),
        n: tally.n,
        wins: tally.wins,
        ties: tally.ties,
        losses: tally.losses,
        win_rate: tally.win_rate(),
        tie_rate: tally.tie_rate(),
        loss_rate: tally.loss_rate(),
        score: tally.score(),
        score_ci: [lo, hi],
        bt_win_prob: bradley_terry(&games).map(|fit| fit.win_prob),
        bt_ci: bootstrap_bt_ci(&games, resamples, seed).map(|(lo, hi)| [lo, hi]),
        games: n_games,
        unparsable_games: n_unparsable,
        available: n_games == 0 || (n_games - n_unparsable) as f64 >= min_valid_share * n_games as f64,
    }
}

/// Groups questions by the keys `keys` gives each (a question counts once in each of its
/// distinct keys) and computes the statistics of each group, sorted by name.
fn grouped<F>(input: &ReportInput, keys: F) -> Vec<GroupStats>
where
    F: Fn(&QuestionResult) -> BTreeSet<String>,
{
    let mut groups: BTreeMap<String, Vec<&QuestionResult>> = BTreeMap::new();
    for q in &input.results {
        for key in keys(q) {
            groups.entry(key).or_default().push(q);
        }
    }
    groups
        .iter()
        .map(|(name, members)| group_stats(name, members, input.resamples, input.seed, input.min_valid_share))
        .collect()
}

/// Builds the report: overall statistics and groups by category, sub-category (questions that
/// have one), language (a question with
/// several languages counts in each; one without languages counts as "unknown") and
/// difficulty (`None` → "unknown"), each sorted by name.
pub fn build_report(input: &ReportInput) -> Report {
    let all: Vec<&QuestionResult> = input.results.iter().collect();
    let unparsable_games = input
        .results
        .iter()
        .flat_map(|q| &q.games)
        .filter(|g| g.label.is_none())
        .count();
    Report {
        model: input.model.clone(),
        opponent: input.opponent.clone(),
        judge: input.judge.clone(),
        metric: format!("win/tie vs {}, judge {}", input.opponent, input.judge),
        overall: group_stats("overall", &all, input.resamples, input.seed, input.min_valid_share),
        by_category: grouped(input, |q| BTreeSet::from([q.category.clone()])),
        by_sub_category: grouped(input, |q| q.sub_category.iter().cloned().collect()),
        by_language: grouped(input, |q| {
            if q.languages.is_empty() {
                BTreeSet::from([UNKNOWN.to_string()])
            } else {
                q.languages.iter().cloned().collect()
            }
        }),
        by_difficulty: grouped(input, |q| {
            BTreeSet::from([q.difficulty.clone().unwrap_or_else(|| UNKNOWN.to_string())])
        }),
        questions: input.results.len(),
        skipped_too_long: input.skipped_too_long,
        missing: input.missing,
        unparsable_games,
        min_valid_share: input.min_valid_share,
        truncated_answers: input.truncated_answers,
        opponent_truncated: input.opponent_truncated,
        resamples: input.resamples,
        seed: input.seed,
        questions_source: None,
    }
}

/// Text safe inside a Markdown table cell.
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn ci(ci: [f64; 2]) -> String {
    format!("[{:.3}, {:.3}]", ci[0], ci[1])
}

fn bt_cell(g: &GroupStats) -> String {
    match (g.bt_win_prob, g.bt_ci) {
        (Some(p), Some(c)) => format!("{p:.3} {}", ci(c)),
        (Some(p), None) => format!("{p:.3}"),
        _ => "–".to_string(),
    }
}

/// A Markdown table of groups, headed by `first` as the name column.
fn md_table(out: &mut String, first: &str, groups: &[GroupStats]) {
    if groups.is_empty() {
        out.push_str("_none_\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "| {first} | N | Win % | Tie % | Loss % | Score | 95% CI | BT win prob [CI] | Unparsable games |"
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---|---|---:|\n");
    for g in groups {
        let na = "n/a".to_string();
        let ok = g.reliable();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} of {} |",
            md_cell(&g.name),
            g.n,
            if ok { pct(g.win_rate) } else { na.clone() },
            if ok { pct(g.tie_rate) } else { na.clone() },
            if ok { pct(g.loss_rate) } else { na.clone() },
            if ok { format!("{:.3}", g.score) } else { na.clone() },
            if ok { ci(g.score_ci) } else { na.clone() },
            bt_cell(g),
            g.unparsable_games,
            g.games
        );
    }
    out.push('\n');
}

/// The leaderboard's row: the model, then `W/T` overall and per main category, then per
/// sub-category where there are any, with what it measures and over how many questions.
fn leaderboard_table(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "## Leaderboard form\n\n{} (win % / tie %, as the CodeArena leaderboard):\n",
        r.metric
    );
    let groups: Vec<&GroupStats> = std::iter::once(&r.overall).chain(&r.by_category).collect();
    let head: Vec<String> = groups.iter().map(|g| md_cell(&g.name)).collect();
    let _ = writeln!(out, "| Model | {} |", head.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(groups.len()));
    let cells: Vec<&str> = groups
        .iter()
        .map(|g| if g.reliable() { g.wt.as_str() } else { "n/a" })
        .collect();
    let _ = writeln!(out, "| {} | {} |\n", md_cell(&r.model), cells.join(" | "));
    if !r.by_sub_category.is_empty() {
        let subs: Vec<String> = r
            .by_sub_category
            .iter()
            .map(|g| {
                format!(
                    "{} {}",
                    md_cell(&g.name),
                    if g.reliable() { g.wt.as_str() } else { "n/a" }
                )
            })
            .collect();
        let _ = writeln!(out, "Sub-categories: {}.\n", subs.join("; "));
    }
    let _ = writeln!(
        out,
        "N = {} questions scored (the leaderboard's N is {LEADERBOARD_N}: CodeArena's 397 less those of \
         1024 words or more); {} not judged in both games; {} skipped as too long; {} of the model's \
         answers cut at the token limit{}.\n",
        r.questions,
        r.missing,
        r.skipped_too_long,
        r.truncated_answers,
        if r.opponent_truncated > 0 {
            format!(" ({} of the opponent's)", r.opponent_truncated)
        } else {
            String::new()
        }
    );
}

/// The report as Markdown: title, explanation, the overall / category / language / difficulty
/// tables and the counts of skipped, missing and unparsable items.
pub fn render_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# CodeArena: {} vs {}\n", r.model, r.opponent);
    let games = r.overall.games;
    if r.unparsable_games > 0 {
        let _ = writeln!(
            out,
            "> **Warning: {} of {games} games ({:.0}%) have a judge reply whose verdict could not be parsed.** \
             They count as ties (0 points), pulling every score towards 0.5; rates of groups where fewer than \
             {:.0}% of the games have a verdict are shown as n/a. Check the judge model and protocol \
             (`judgment` in the judgment file shows the replies).\n",
            r.unparsable_games,
            100.0 * r.unparsable_games as f64 / games.max(1) as f64,
            100.0 * r.min_valid_share
        );
    }
    let _ = writeln!(
        out,
        "Judge: `{}`. Each question is judged in two games with the answer positions swapped; per game \
         the model gets +2 / +1 / 0 / −1 / −2 points for a strong win / win / tie / loss / strong loss \
         (an unparsable judgment counts 0). A question is a **win** when the model's points over both \
         games are > 0, a **tie** at 0 and a **loss** below 0. **Score** = (wins + ½ ties) / N. \
         **95% CI** is a percentile bootstrap over questions ({} resamples, seed {}). **BT** is the \
         Bradley–Terry win probability of the model against the opponent (a strong verdict counts as \
         3 battles, a tie as half a win), with its bootstrap 95% CI; \"–\" where the group has no \
         parsable game to fit it on.\n",
        r.judge, r.resamples, r.seed
    );
    if let Some(src) = &r.questions_source {
        let _ = writeln!(out, "Questions: {src}.\n");
    }
    leaderboard_table(&mut out, r);
    out.push_str(
        "The tables below are syncoder's additions to the leaderboard's numbers: loss rate, score, \
         its bootstrap interval, the Bradley–Terry probability, and the language and difficulty \
         groups.\n\n",
    );
    out.push_str("## Overall\n\n");
    md_table(&mut out, "Group", std::slice::from_ref(&r.overall));
    out.push_str("## By category\n\n");
    md_table(&mut out, "Category", &r.by_category);
    if !r.by_sub_category.is_empty() {
        out.push_str("## By sub-category\n\n");
        md_table(&mut out, "Sub-category", &r.by_sub_category);
    }
    out.push_str("## By language\n\n");
    md_table(&mut out, "Language", &r.by_language);
    out.push_str("## By difficulty\n\n");
    md_table(&mut out, "Difficulty", &r.by_difficulty);
    out.push_str("## Counts\n\n");
    let _ = writeln!(out, "- Questions scored: {}", r.questions);
    let _ = writeln!(out, "- Skipped (prompt too long): {}", r.skipped_too_long);
    let _ = writeln!(out, "- Missing (not judged in both games): {}", r.missing);
    let _ = writeln!(out, "- Unparsable games (counted 0 points): {}", r.unparsable_games);
    let _ = writeln!(
        out,
        "- Answers cut at the token limit: {} (model), {} (opponent)",
        r.truncated_answers, r.opponent_truncated
    );
    out
}

const SVG_WIDTH: f64 = 760.0;
const SVG_BAR_X: f64 = 200.0;
const SVG_BAR_W: f64 = 400.0;
const SVG_TOP: f64 = 48.0;
const SVG_ROW_H: f64 = 28.0;
const SVG_BAR_H: f64 = 16.0;
const SVG_TICKS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Longest group name drawn in full in the SVG (longer ones are cut and end with "…").
const SVG_MAX_LABEL: usize = 28;

/// `name` cut to [`SVG_MAX_LABEL`] characters.
fn svg_label(name: &str) -> String {
    if name.chars().count() <= SVG_MAX_LABEL {
        name.to_string()
    } else {
        let mut cut: String = name.chars().take(SVG_MAX_LABEL - 1).collect();
        cut.push('…');
        cut
    }
}

/// X coordinate of a value on the 0..1 axis (clamped; NaN at 0).
fn svg_x(v: f64) -> f64 {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    SVG_BAR_X + v * SVG_BAR_W
}

/// One bar row: label, bar, CI whisker with end caps, value.
fn svg_row(out: &mut String, row: usize, g: &GroupStats, fill: &str) {
    let y = SVG_TOP + row as f64 * SVG_ROW_H;
    let cy = y + SVG_BAR_H / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{} (n={})</text>"#,
        SVG_BAR_X - 8.0,
        cy,
        xml_escape(&svg_label(&g.name)),
        g.n
    );
    if !g.reliable() {
        let _ = writeln!(
            out,
            r#"<text x="{SVG_BAR_X:.1}" y="{cy:.1}" dominant-baseline="middle">n/a: {} of {} verdicts unparsable</text>"#,
            g.unparsable_games, g.games
        );
        return;
    }
    let (x0, x, lo, hi) = (SVG_BAR_X, svg_x(g.score), svg_x(g.score_ci[0]), svg_x(g.score_ci[1]));
    let _ = writeln!(
        out,
        r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{SVG_BAR_H:.1}" fill="{fill}"/>"#,
        x - x0
    );
    let _ = writeln!(
        out,
        r#"<line x1="{lo:.1}" y1="{cy:.1}" x2="{hi:.1}" y2="{cy:.1}" stroke="black"/>"#
    );
    for cap in [lo, hi] {
        let _ = writeln!(
            out,
            r#"<line x1="{cap:.1}" y1="{:.1}" x2="{cap:.1}" y2="{:.1}" stroke="black"/>"#,
            cy - 5.0,
            cy + 5.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{cy:.1}" dominant-baseline="middle">{:.3} [{:.3}, {:.3}]</text>"#,
        SVG_BAR_X + SVG_BAR_W + 12.0,
        g.score,
        g.score_ci[0],
        g.score_ci[1]
    );
}

/// The score chart as a standalone SVG: one horizontal bar for "overall" and then one per
/// category, on a 0..1 axis with ticks at 0, .25, .5, .75, 1 and a dashed line at 0.5, each with
/// its 95% CI whisker and printed value.
pub fn render_svg(r: &Report) -> String {
    let rows: Vec<&GroupStats> = std::iter::once(&r.overall).chain(&r.by_category).collect();
    let axis_y = SVG_TOP + rows.len() as f64 * SVG_ROW_H;
    let height = axis_y + 36.0;
    let mut out = String::new();
    svg::open(&mut out, SVG_WIDTH, height);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        SVG_BAR_X - 190.0,
        xml_escape(&format!(
            "CodeArena score: {} vs {} (judge {})",
            r.model, r.opponent, r.judge
        ))
    );
    for (i, g) in rows.iter().enumerate() {
        svg_row(&mut out, i, g, if i == 0 { "#f58518" } else { "#4c78a8" });
    }
    let _ = writeln!(
        out,
        r#"<line x1="{SVG_BAR_X:.1}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="black"/>"#,
        SVG_BAR_X + SVG_BAR_W
    );
    for t in SVG_TICKS {
        let x = svg_x(t);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/>"#,
            axis_y + 5.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"#,
            axis_y + 18.0
        );
    }
    let mid = svg_x(0.5);
    let _ = writeln!(
        out,
        r#"<line x1="{mid:.1}" y1="{:.1}" x2="{mid:.1}" y2="{axis_y:.1}" stroke="gray" stroke-dasharray="4 3"/>"#,
        SVG_TOP - 6.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::verdict::{Label, Position};

    fn q(
        id: &str,
        category: &str,
        langs: &[&str],
        difficulty: Option<&str>,
        labels: [Option<Label>; 2],
    ) -> QuestionResult {
        QuestionResult {
            id: id.to_string(),
            category: category.to_string(),
            sub_category: None,
            languages: langs.iter().map(|s| s.to_string()).collect(),
            difficulty: difficulty.map(str::to_string),
            games: vec![
                GameVerdict {
                    model_position: Position::A,
                    label: labels[0],
                },
                GameVerdict {
                    model_position: Position::B,
                    label: labels[1],
                },
            ],
        }
    }

    /// Six questions; the model is A in game 1 and B in game 2.
    fn input() -> ReportInput {
        use Label::*;
        ReportInput {
            model: "syncoder-7b".into(),
            opponent: "gpt-4o".into(),
            judge: "judge<x>".into(),
            results: vec![
                q(
                    "q1",
                    "debug",
                    &["python"],
                    Some("easy"),
                    [Some(AMuchBetter), Some(BBetter)],
                ), // +3 win
                q("q2", "debug", &["python", "rust"], Some("hard"), [Some(Tie), Some(Tie)]), // 0 tie
                q("q3", "gen", &["rust"], None, [Some(BBetter), Some(ABetter)]),             // -2 loss
                q("q4", "gen", &["cpp"], Some("easy"), [Some(ABetter), None]),               // +1 win
                q(
                    "q5",
                    "gen",
                    &["python"],
                    Some("hard"),
                    [Some(BMuchBetter), Some(BBetter)],
                ), // -1 loss
                q("q6", "debug", &["rust"], None, [None, None]),                             // 0 tie
            ],
            skipped_too_long: 2,
            missing: 1,
            resamples: 500,
            seed: 42,
            // 3 of 12 games unparsable: the hand counts below show every rate.
            min_valid_share: 0.0,
            truncated_answers: 0,
            opponent_truncated: 0,
        }
    }

    fn counts(g: &GroupStats) -> (&str, usize, usize, usize, usize) {
        (g.name.as_str(), g.n, g.wins, g.ties, g.losses)
    }

    #[test]
    fn sub_categories_group_only_the_questions_that_have_one() {
        let mut inp = input();
        assert!(build_report(&inp).by_sub_category.is_empty());
        assert!(!render_markdown(&build_report(&inp)).contains("sub-category"));
        inp.results[0].sub_category = Some("s1".into());
        inp.results[5].sub_category = Some("s1".into());
        inp.results[1].sub_category = Some("s2".into());
        let r = build_report(&inp);
        let subs: Vec<(&str, usize)> = r.by_sub_category.iter().map(|g| (g.name.as_str(), g.n)).collect();
        assert_eq!(subs, vec![("s1", 2), ("s2", 1)]);
        assert!(render_markdown(&r).contains("## By sub-category"));
    }

    /// Cells round as Python's `round(x * 100, 1)` (values from Python 3).
    #[test]
    fn wt_cells_round_like_python() {
        assert_eq!(wt_cell(0.0025, 0.0075), "0.2/0.8");
        assert_eq!(wt_cell(0.1225, 0.0035), "12.2/0.4"); // 0.0035 * 100 = 0.35000000000000003
        assert_eq!(wt_cell(0.125, 0.0625), "12.5/6.2");
        for (k, n, want) in [
            (1, 3, "33.3"),
            (2, 3, "66.7"),
            (1, 6, "16.7"),
            (5, 12, "41.7"),
            (7, 392, "1.8"),
            (131, 392, "33.4"),
        ] {
            assert_eq!(wt_cell(k as f64 / n as f64, 1.0), format!("{want}/100.0"), "{k}/{n}");
        }
    }

    /// The leaderboard row against a hand count of `input()`: overall 2 wins, 2 ties of 6;
    /// `debug` 1 win, 2 ties of 3; `gen` 1 win, 0 ties of 3.
    #[test]
    fn the_leaderboard_row_is_a_hand_count() {
        let r = build_report(&input());
        assert_eq!(r.overall.wt, "33.3/33.3");
        let cells: Vec<(&str, &str)> = r.by_category.iter().map(|g| (g.name.as_str(), g.wt.as_str())).collect();
        assert_eq!(cells, vec![("debug", "33.3/66.7"), ("gen", "33.3/0.0")]);
        let md = render_markdown(&r);
        assert!(
            md.contains(&format!(
                "| Model | overall | debug | gen |\n|---|---:|---:|---:|\n| {} | 33.3/33.3 | 33.3/66.7 | 33.3/0.0 |",
                r.model
            )),
            "{md}"
        );
        assert!(md.contains(&format!("win/tie vs {}, judge {}", r.opponent, r.judge)));
        assert!(md.contains("N = 6 questions scored (the leaderboard's N is 392"));
        assert!(md.contains("syncoder's additions"));
    }

    #[test]
    fn exact_counts_and_scores() {
        let r = build_report(&input());
        assert_eq!(counts(&r.overall), ("overall", 6, 2, 2, 2));
        assert_eq!(r.overall.score, 0.5);
        assert!((r.overall.win_rate - 1.0 / 3.0).abs() < 1e-12);
        let cats: Vec<_> = r.by_category.iter().map(counts).collect();
        assert_eq!(cats, vec![("debug", 3, 1, 2, 0), ("gen", 3, 1, 0, 2)]);
        assert!((r.by_category[0].score - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.by_category[1].score - 1.0 / 3.0).abs() < 1e-12);
        let langs: Vec<_> = r.by_language.iter().map(counts).collect();
        assert_eq!(
            langs,
            vec![("cpp", 1, 1, 0, 0), ("python", 3, 1, 1, 1), ("rust", 3, 0, 2, 1)]
        );
        let diffs: Vec<_> = r.by_difficulty.iter().map(counts).collect();
        assert_eq!(
            diffs,
            vec![("easy", 2, 2, 0, 0), ("hard", 2, 0, 1, 1), ("unknown", 2, 0, 1, 1)]
        );
        assert_eq!(r.by_difficulty[1].score, 0.25);
        assert_eq!(
            (r.questions, r.skipped_too_long, r.missing, r.unparsable_games),
            (6, 2, 1, 3)
        );
        // Single-question group: degenerate CI.
        assert_eq!(r.by_language[0].score_ci, [1.0, 1.0]);
    }

    #[test]
    fn bt_and_ci_in_report() {
        let r = build_report(&input());
        // Battles: won 4+1+0+1+1 = 7 of 4+2+2+1+4 = 13.
        let p = r.overall.bt_win_prob.unwrap();
        assert!((p - 7.0 / 13.0).abs() < 1e-3, "{p}");
        let [lo, hi] = r.overall.bt_ci.unwrap();
        assert!(lo <= p && p <= hi);
        let [lo, hi] = r.overall.score_ci;
        assert!(lo <= 0.5 && 0.5 <= hi);
        assert_eq!(build_report(&input()), r);
    }

    #[test]
    fn group_without_parsable_games_has_no_bt() {
        let mut inp = input();
        inp.results.retain(|q| q.id == "q6");
        let r = build_report(&inp);
        assert_eq!(r.overall.bt_win_prob, None);
        assert_eq!(r.overall.bt_ci, None);
        assert!(
            render_markdown(&r).contains("| overall | 1 | 0.0 | 100.0 | 0.0 | 0.500 | [0.500, 0.500] | – | 2 of 2 |")
        );
    }

    /// Unparsable verdicts are loud: a banner above everything, rates shown as n/a where fewer
    /// than the set share of games have a verdict, and the count in every table.
    #[test]
    fn mostly_unparsable_groups_show_no_score() {
        let mut inp = input();
        inp.min_valid_share = MIN_VALID_SHARE;
        let r = build_report(&inp);
        // Overall 9 of 12 games have a verdict (75% < 90%): n/a; "gen" has 5 of 6 (83%): n/a;
        // "debug" 4 of 6: n/a. Python (q1, q2, q5) has all 6: shown.
        assert!(!r.overall.available);
        let md = render_markdown(&r);
        assert!(
            md.starts_with("# CodeArena: syncoder-7b vs gpt-4o\n\n> **Warning: 3 of 12 games (25%)"),
            "{md}"
        );
        assert!(md.contains("| overall | 6 | n/a | n/a | n/a | n/a | n/a |"), "{md}");
        assert!(
            md.contains("| Model | overall | debug | gen |\n|---|---:|---:|---:|\n| syncoder-7b | n/a | n/a | n/a |"),
            "{md}"
        );
        let py = r.by_language.iter().find(|g| g.name == "python").unwrap();
        assert!(py.available && py.unparsable_games == 0 && py.games == 6);
        assert!(md.contains("| 3 of 12 |"), "{md}");
        assert!(render_svg(&r).contains("n/a: 3 of 12 verdicts unparsable"));
        // With every verdict parsed there is no banner.
        inp.results.retain(|q| q.games.iter().all(|g| g.label.is_some()));
        assert!(!render_markdown(&build_report(&inp)).contains("Warning"));
    }

    #[test]
    fn empty_report_does_not_panic() {
        let mut inp = input();
        inp.results.clear();
        let r = build_report(&inp);
        assert_eq!(r.overall.n, 0);
        assert!(r.by_category.is_empty());
        assert!(render_markdown(&r).contains("_none_"));
        assert_eq!(render_svg(&r).matches("<rect").count(), 1);
    }

    #[test]
    fn json_round_trip() {
        let r = build_report(&input());
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        // serde_json may change the last bit of a float; compare the rest exactly.
        assert_eq!(
            (back.questions, back.unparsable_games, back.seed),
            (r.questions, r.unparsable_games, r.seed)
        );
        let groups = |r: &Report| -> Vec<GroupStats> {
            let mut v = vec![r.overall.clone()];
            v.extend(
                r.by_category
                    .iter()
                    .chain(&r.by_language)
                    .chain(&r.by_difficulty)
                    .cloned(),
            );
            v
        };
        for (a, b) in groups(&back).iter().zip(groups(&r).iter()) {
            assert_eq!(counts(a), counts(b));
            assert!((a.score - b.score).abs() < 1e-12 && (a.score_ci[1] - b.score_ci[1]).abs() < 1e-12);
            assert_eq!(a.bt_win_prob.is_some(), b.bt_win_prob.is_some());
            if let (Some(x), Some(y)) = (a.bt_ci, b.bt_ci) {
                assert!((x[0] - y[0]).abs() < 1e-12);
            }
        }
        assert_eq!(groups(&back).len(), 9);
        assert!(json.contains(r#""score_ci":["#) && json.contains(r#""by_language":["#));
    }

    #[test]
    fn markdown_has_tables_and_counts() {
        let md = render_markdown(&build_report(&input()));
        assert!(md.starts_with("# CodeArena: syncoder-7b vs gpt-4o"));
        assert!(md.contains("| debug | 3 | 33.3 | 66.7 | 0.0 | 0.667 |"), "{md}");
        assert!(md.contains("| gen | 3 | 33.3 | 0.0 | 66.7 | 0.333 |"));
        assert!(md.contains("| cpp | 1 | 100.0 | 0.0 | 0.0 | 1.000 | [1.000, 1.000] |"));
        assert!(md.contains("| unknown | 2 |"));
        assert!(md.contains("| overall | 6 | 33.3 | 33.3 | 33.3 | 0.500 |"));
        assert!(md.contains("- Unparsable games (counted 0 points): 3"));
        assert!(md.contains("- Skipped (prompt too long): 2"));
        assert!(md.contains("- Missing (not judged in both games): 1"));
    }

    /// Checks that every tag is closed in order and no raw '<' or '&' appears in text.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "raw '>' in {text:?}");
            for (i, _) in text.match_indices('&') {
                let ent = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"].iter().any(|e| ent.starts_with(e)),
                    "{ent}"
                );
            }
            let end = rest[start..].find('>').unwrap() + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "{tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name));
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "{stack:?}");
        assert!(rest.trim().is_empty());
    }

    #[test]
    fn svg_is_well_formed() {
        let mut inp = input();
        inp.results[0].category = "a<b & c>".into();
        let r = build_report(&inp);
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + r.by_category.len());
        assert_eq!(r.by_category.len(), 3);
        assert!(svg.contains("a&lt;b &amp; c&gt;"));
        assert!(svg.contains("judge&lt;x&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        for t in [">0</text>", ">0.25</text>", ">0.5</text>", ">0.75</text>", ">1</text>"] {
            assert!(svg.contains(t), "{t}");
        }
        assert_well_formed(&svg);
        assert_eq!(svg_label(&"x".repeat(40)).chars().count(), SVG_MAX_LABEL);
    }
}
