//! Opt-in host time of a decode layer's submission by step (`HMOE_MOE_PROFILE=1`, the
//! engine's MoE profile switch): between the router logits and the GPU's work the host
//! plans and issues the expert pass, and the GPU waits for it.

use std::time::Instant;

/// Environment variable shared with the engine's MoE host profile.
const PROFILE_ENV: &str = "HMOE_MOE_PROFILE";
/// Submissions of at most this many token rows are timed (decode).
const DECODE_MAX_ROWS: usize = 8;

/// The steps of `submit`, in order.
pub(crate) const STEPS: [&str; 6] = ["check", "plan", "pack", "t0", "launch", "finish"];

/// Accumulated nanoseconds per step.
#[derive(Debug, Default)]
pub(crate) struct SubmitProfile {
    on: bool,
    ns: [u64; STEPS.len()],
    calls: u64,
    last: Option<Instant>,
}

impl SubmitProfile {
    /// On when the profile switch is `1`.
    pub(crate) fn from_env() -> Self {
        Self {
            on: std::env::var(PROFILE_ENV).is_ok_and(|v| v.trim() == "1"),
            ..Self::default()
        }
    }

    /// Starts timing a submission of `rows` token rows (not timed beyond decode).
    pub(crate) fn begin(&mut self, rows: usize) {
        self.last = None;
        if self.on && rows <= DECODE_MAX_ROWS {
            self.calls += 1;
            self.last = Some(Instant::now());
        }
    }

    /// Charges the time since the last mark to step `i` of [`STEPS`].
    pub(crate) fn lap(&mut self, i: usize) {
        if let Some(t) = self.last {
            let now = Instant::now();
            if let Some(n) = self.ns.get_mut(i) {
                *n += (now - t).as_nanos() as u64;
            }
            self.last = Some(now);
        }
    }

    /// Mean microseconds per submission and step; None when off or empty.
    pub(crate) fn report(&self) -> Option<String> {
        if !self.on || self.calls == 0 {
            return None;
        }
        let per = |ns: u64| ns as f64 / 1e3 / self.calls as f64;
        let mut s = format!(
            "GPU submit host profile (decode): {} submissions, {:.1} us each",
            self.calls,
            per(self.ns.iter().sum())
        );
        for (name, &ns) in STEPS.iter().zip(&self.ns) {
            s.push_str(&format!("\n  {name:<8} {:>7.2} us", per(ns)));
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_enabled_profile_of_decode_submissions_reports() {
        let mut p = SubmitProfile::default();
        p.begin(1);
        p.lap(0);
        assert!(p.report().is_none());
        let mut p = SubmitProfile {
            on: true,
            ..SubmitProfile::default()
        };
        p.begin(DECODE_MAX_ROWS + 1);
        p.lap(0);
        assert!(p.report().is_none(), "a prefill submission is not timed");
        p.begin(1);
        std::thread::sleep(std::time::Duration::from_millis(1));
        p.lap(4);
        let r = p.report().expect("a report");
        let launch = r
            .lines()
            .find(|l| l.contains("launch"))
            .expect("launch line");
        let us: f64 = launch.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(us >= 1000.0, "{r}");
    }
}
