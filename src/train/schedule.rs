//! The learning-rate curve: linear warmup from 0, then cosine or linear decay to 0 (or constant).

use super::config::Schedule;

/// Number of warmup steps for `warmup_ratio` of `total` steps (rounded up, as transformers does).
pub fn warmup_steps(total: usize, warmup_ratio: f64) -> usize {
    (total as f64 * warmup_ratio).ceil() as usize
}

/// The learning rate for optimizer step `step` (0-based) of `total`.
pub fn lr_at(schedule: Schedule, peak: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak * (1.0 - progress),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn warmup_then_decay() {
        let w = warmup_steps(100, 0.1);
        assert_eq!(w, 10);
        assert!((lr_at(Schedule::Cosine, 1.0, 0, 100, w) - 0.1).abs() < 1e-12);
        assert!((lr_at(Schedule::Cosine, 1.0, 9, 100, w) - 1.0).abs() < 1e-12);
        assert!((lr_at(Schedule::Cosine, 1.0, 10, 100, w) - 1.0).abs() < 1e-12);
        assert!((lr_at(Schedule::Cosine, 1.0, 55, 100, w) - 0.5).abs() < 1e-12);
        assert!((lr_at(Schedule::Linear, 1.0, 55, 100, w) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(Schedule::Constant, 0.3, 90, 100, w), 0.3);
    }

    proptest! {
        #[test]
        fn lr_stays_in_range(step in 0usize..500, total in 1usize..500, ratio in 0.0f64..0.9) {
            let w = warmup_steps(total, ratio);
            for s in [Schedule::Cosine, Schedule::Linear, Schedule::Constant] {
                let lr = lr_at(s, 2e-4, step, total, w);
                prop_assert!((0.0..=2e-4 + 1e-18).contains(&lr));
            }
        }
    }
}
