//! The learning-rate schedule of a stage: linear warmup from 0 to the peak over `warmup_steps`,
//! then cosine, linear or constant decay to `peak · min_lr_ratio` at the stage's last step.

use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

/// The LR schedule of a stage, with the defaults of `[optim]` filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSchedule {
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub kind: ScheduleKind,
}

/// LR of the optimizer step with 0-based index `step` within a stage of `total` steps.
pub fn lr_at(s: &StageSchedule, step: u64, total: u64) -> f64 {
    let floor = s.lr * s.min_lr_ratio;
    if step < s.warmup_steps {
        return s.lr * (step + 1) as f64 / s.warmup_steps as f64;
    }
    let decay_steps = total.saturating_sub(s.warmup_steps).max(1);
    // Progress from 0 (first step after warmup) to 1 (the stage's last step).
    let progress = if decay_steps <= 1 {
        1.0
    } else {
        ((step - s.warmup_steps) as f64 / (decay_steps - 1) as f64).min(1.0)
    };
    match s.kind {
        ScheduleKind::Constant => s.lr,
        ScheduleKind::Linear => floor + (s.lr - floor) * (1.0 - progress),
        ScheduleKind::Cosine => floor + (s.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> StageSchedule {
        StageSchedule {
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 4,
            kind,
        }
    }

    #[test]
    fn warmup_is_linear_and_reaches_the_peak() {
        let s = sched(ScheduleKind::Cosine);
        assert!((lr_at(&s, 0, 20) - 2.5e-4).abs() < 1e-12);
        assert!((lr_at(&s, 3, 20) - 1e-3).abs() < 1e-12);
    }

    #[test]
    fn decays_end_at_the_floor() {
        for kind in [ScheduleKind::Cosine, ScheduleKind::Linear] {
            let s = sched(kind);
            assert!((lr_at(&s, 4, 20) - 1e-3).abs() < 1e-12, "{kind:?}");
            assert!((lr_at(&s, 19, 20) - 1e-4).abs() < 1e-12, "{kind:?}");
            assert!((lr_at(&s, 50, 20) - 1e-4).abs() < 1e-12, "{kind:?} past the end");
            let mid = lr_at(&s, 4 + 15 / 2, 20);
            assert!(mid < 1e-3 && mid > 1e-4);
        }
        assert_eq!(lr_at(&sched(ScheduleKind::Constant), 19, 20), 1e-3);
    }

    #[test]
    fn cosine_midpoint_is_halfway() {
        let s = StageSchedule {
            warmup_steps: 0,
            ..sched(ScheduleKind::Cosine)
        };
        // 11 steps: progress 0.5 at step 5.
        assert!((lr_at(&s, 5, 11) - 5.5e-4).abs() < 1e-12);
    }
}
