//! Opt-in host time of a layer's submission by step (`HMOE_MOE_PROFILE=1`, the engine's
//! MoE profile switch): between the router logits and the GPU's work the host plans and
//! issues the expert pass, and the GPU waits for it. Decode and prefill submissions are
//! averaged apart.

use std::time::Instant;

/// Environment variable shared with the engine's MoE host profile.
const PROFILE_ENV: &str = "HMOE_MOE_PROFILE";
/// Submissions of at most this many token rows count as decode.
const DECODE_MAX_ROWS: usize = 8;

/// The steps of `submit`, in order.
pub(crate) const STEPS: [&str; 6] = ["check", "plan", "pack", "t0", "launch", "finish"];

/// Accumulated nanoseconds per step of one kind of submission.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ns: [u64; STEPS.len()],
    calls: u64,
}

/// Host time per step, decode and prefill submissions apart.
#[derive(Debug, Default)]
pub(crate) struct SubmitProfile {
    on: bool,
    /// `[decode, prefill]`.
    tallies: [Tally; 2],
    current: usize,
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

    /// Starts timing a submission of `rows` token rows.
    pub(crate) fn begin(&mut self, rows: usize) {
        self.last = None;
        if self.on {
            self.current = usize::from(rows > DECODE_MAX_ROWS);
            self.tallies[self.current].calls += 1;
            self.last = Some(Instant::now());
        }
    }

    /// Charges the time since the last mark to step `i` of [`STEPS`].
    pub(crate) fn lap(&mut self, i: usize) {
        if let Some(t) = self.last {
            let now = Instant::now();
            if let Some(n) = self.tallies[self.current].ns.get_mut(i) {
                *n += (now - t).as_nanos() as u64;
            }
            self.last = Some(now);
        }
    }

    /// Mean microseconds per submission and step of each kind that ran; None when off
    /// or empty.
    pub(crate) fn report(&self) -> Option<String> {
        if !self.on {
            return None;
        }
        let mut out = Vec::new();
        for (kind, t) in ["decode", "prefill"].iter().zip(&self.tallies) {
            if t.calls == 0 {
                continue;
            }
            let per = |ns: u64| ns as f64 / 1e3 / t.calls as f64;
            let mut s = format!(
                "GPU submit host profile ({kind}): {} submissions, {:.1} us each",
                t.calls,
                per(t.ns.iter().sum())
            );
            for (name, &ns) in STEPS.iter().zip(&t.ns) {
                s.push_str(&format!("\n  {name:<8} {:>9.2} us", per(ns)));
            }
            out.push(s);
        }
        (!out.is_empty()).then(|| out.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_enabled_profile_reports_and_prefill_is_apart() {
        let mut p = SubmitProfile::default();
        p.begin(1);
        p.lap(0);
        assert!(p.report().is_none());
        let mut p = SubmitProfile {
            on: true,
            ..SubmitProfile::default()
        };
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
        assert!(!r.contains("prefill"), "{r}");
        p.begin(DECODE_MAX_ROWS + 1);
        p.lap(0);
        let r = p.report().expect("a report");
        assert!(r.contains("(prefill): 1 submissions"), "{r}");
    }
}
