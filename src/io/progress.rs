//! The counting progress bar every long loop shows on a terminal (training steps, answered
//! questions, judged games): `PREFIX [=====>    ] 12/40 UNIT  elapsed < ETA  message`.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` items named `unit`, labelled `prefix`; indicatif hides it when stderr is not
/// a terminal.
pub fn counting_bar(prefix: &str, unit: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{elapsed_precise}} < ETA {{eta_precise}}  {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
