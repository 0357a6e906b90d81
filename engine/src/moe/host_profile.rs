//! Opt-in host-time profile of [`super::MoeDispatch::run_layer`] (`HMOE_MOE_PROFILE=1`):
//! in decode the GPU waits while the host routes, plans and submits a layer's experts, so
//! every microsecond of this path is on the token's critical path. The report splits a
//! layer's host time by phase; it is printed when the dispatcher is dropped. Only decode
//! layers are timed (at most [`DECODE_MAX_ROWS`] token rows): a prefill layer's share of
//! milliseconds would swamp the averages.

use std::time::Instant;

/// Layers of at most this many token rows count as decode (as the dense path's graphs).
pub const DECODE_MAX_ROWS: usize = 8;

/// Environment variable: `1` turns the profile on.
pub const MOE_PROFILE_ENV: &str = "HMOE_MOE_PROFILE";

/// A phase of `run_layer`, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The placer's plan.
    Place,
    /// Copying the plan's items into the CPU and GPU shares.
    Split,
    /// Issuing the GPU share (uploads, launches, events).
    Submit,
    /// Feeding the previous deferred layer back to the placer.
    Feedback,
    /// The CPU share.
    Cpu,
    /// Waiting for or deferring the GPU share.
    Finish,
    /// Issuing the plan's background loads.
    Loads,
    /// Recording the layer for its feedback.
    Record,
}

const PHASES: [Phase; 8] = [
    Phase::Place,
    Phase::Split,
    Phase::Submit,
    Phase::Feedback,
    Phase::Cpu,
    Phase::Finish,
    Phase::Loads,
    Phase::Record,
];

/// Accumulated nanoseconds per phase (nothing is timed when off).
#[derive(Debug)]
pub struct HostProfile {
    enabled: bool,
    ns: [u64; PHASES.len()],
    layers: u64,
    last: Option<Instant>,
}

impl HostProfile {
    /// On when [`MOE_PROFILE_ENV`] is `1`.
    pub fn from_env() -> Self {
        Self::new(std::env::var(MOE_PROFILE_ENV).is_ok_and(|v| v.trim() == "1"))
    }

    /// A profile that records (`enabled`) or does nothing.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ns: [0; PHASES.len()],
            layers: 0,
            last: None,
        }
    }

    /// Starts the clock of a layer of `rows` token rows (prefill layers are not timed).
    pub fn begin(&mut self, rows: usize) {
        self.last = None;
        if self.enabled && rows <= DECODE_MAX_ROWS {
            self.layers += 1;
            self.last = Some(Instant::now());
        }
    }

    /// Charges the time since the last mark to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        let Some(t) = self.last.filter(|_| self.enabled) else {
            return;
        };
        let now = Instant::now();
        let i = PHASES.iter().position(|&p| p == phase).unwrap_or(0);
        self.ns[i] += (now - t).as_nanos() as u64;
        self.last = Some(now);
    }

    /// One line per phase: mean microseconds per layer; None when off or empty.
    pub fn report(&self) -> Option<String> {
        if !self.enabled || self.layers == 0 {
            return None;
        }
        let per = |ns: u64| ns as f64 / 1e3 / self.layers as f64;
        let total: u64 = self.ns.iter().sum();
        let mut s = format!(
            "MoE layer host profile (decode): {} layers, {:.1} us a layer",
            self.layers,
            per(total)
        );
        for (p, &ns) in PHASES.iter().zip(&self.ns) {
            s.push_str(&format!("\n  {:<10} {:>7.2} us", format!("{p:?}"), per(ns)));
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_off_profile_records_nothing_and_an_on_one_charges_each_phase() {
        let mut off = HostProfile::new(false);
        off.begin(1);
        off.lap(Phase::Place);
        assert!(off.report().is_none());
        let mut on = HostProfile::new(true);
        // A prefill layer is not timed.
        on.begin(DECODE_MAX_ROWS + 1);
        on.lap(Phase::Cpu);
        assert!(on.report().is_none());
        on.begin(1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        on.lap(Phase::Cpu);
        on.lap(Phase::Loads);
        let r = on.report().expect("a report");
        assert!(r.contains("1 layers"), "{r}");
        let cpu_line = r.lines().find(|l| l.contains("Cpu")).expect("Cpu line");
        let us: f64 = cpu_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(us >= 1000.0, "{r}");
    }
}
