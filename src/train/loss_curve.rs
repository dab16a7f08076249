//! `loss.svg`: the training loss per step (and validation loss where computed) as a line chart,
//! written as a small standalone SVG file.

use super::metrics::StepMetrics;
use crate::io::svg::{self, xml_escape};
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// The chart of `metrics` as SVG text (a note in place of lines when no step has a loss).
pub fn render(metrics: &[StepMetrics], title: &str) -> String {
    let train: Vec<(f64, f64)> = metrics.iter().filter_map(|m| Some((m.step as f64, m.loss?))).collect();
    let val: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| Some((m.step as f64, m.val_loss?)))
        .collect();
    let mut s = String::new();
    svg::open(&mut s, W, H);
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    match Frame::around(train.iter().chain(val.iter())) {
        None => {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">no finite loss recorded</text>"#,
                W / 2.0,
                H / 2.0
            );
        }
        Some(frame) => {
            frame.axes(&mut s);
            frame.curves(&mut s, &train, &val);
            legend(&mut s, !val.is_empty());
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The data ranges shown and their mapping to the canvas.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// The frame holding every point (the loss axis from 0, 5% headroom); `None` without points.
    fn around<'a>(points: impl Iterator<Item = &'a (f64, f64)> + Clone) -> Option<Self> {
        points.clone().next()?;
        let x = bounds(points.clone().map(|p| p.0));
        let (y0, y1) = bounds(points.map(|p| p.1));
        Some(Self {
            x,
            y: (y0.min(0.0), y1 * 1.05),
        })
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (H - TOP - BOTTOM)
    }

    /// Grid lines, tick labels and the step axis's title.
    fn axes(&self, s: &mut String) {
        let ((x0, x1), (y0, y1)) = (self.x, self.y);
        for i in 0..=5 {
            let y = y0 + (y1 - y0) * i as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                self.py(y) + 4.0,
                py = self.py(y)
            );
            let x = x0 + (x1 - x0) * i as f64 / 5.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0}</text>"#,
                self.px(x),
                H - BOTTOM + 18.0,
                x
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">optimizer step</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 8.0
        );
    }

    /// The training loss as a solid line; the validation loss dashed, with a dot per point.
    fn curves(&self, s: &mut String, train: &[(f64, f64)], val: &[(f64, f64)]) {
        let line = |pts: &[(f64, f64)]| {
            pts.iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            line(train)
        );
        if val.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3" points="{}"/>"##,
            line(val)
        );
        for &(x, y) in val {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d62728"/>"##,
                self.px(x),
                self.py(y)
            );
        }
    }
}

/// The curves' names in their colours, top right.
fn legend(s: &mut String, validation: bool) {
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#1f77b4" text-anchor="end">training loss</text>"##,
        W - RIGHT - 4.0,
        TOP + 12.0
    );
    if validation {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#d62728" text-anchor="end">validation loss</text>"##,
            W - RIGHT - 4.0,
            TOP + 28.0
        );
    }
}

/// `(min, max)`, widened when they coincide.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_curves_inside_the_canvas() {
        let metrics: Vec<StepMetrics> = (1..=10)
            .map(|s| StepMetrics {
                step: s,
                loss: Some(6.0 / s as f64),
                val_loss: (s % 5 == 0).then_some(3.0 / s as f64),
                ..Default::default()
            })
            .collect();
        let svg = render(&metrics, "run <a>");
        assert!(svg.contains("run &lt;a&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 2);
        let points = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        for p in points.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (LEFT..=W - RIGHT + 0.1).contains(&x) && (TOP - 0.1..=H - BOTTOM + 0.1).contains(&y),
                "{p}"
            );
        }
    }

    #[test]
    fn no_loss_gives_a_note() {
        assert!(render(&[], "x").contains("no finite loss"));
    }
}
