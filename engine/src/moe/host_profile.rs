//! Opt-in host-time profile of [`super::MoeDispatch::run_layer`] (`HMOE_MOE_PROFILE=1`):
//! in decode the GPU waits while the host routes, plans and submits a layer's experts, so
//! every microsecond of this path is on the token's critical path. The report splits a
//! layer's host time by phase; it is printed when the dispatcher is dropped. Decode layers
//! (at most [`DECODE_MAX_ROWS`] token rows) and prefill layers are averaged apart: a
//! prefill layer's milliseconds would swamp decode's microseconds.

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
    /// Issuing the GPU share (uploads, launches, events). In prefill layers it runs
    /// beside the CPU share, with the background loads, and is reported apart.
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

/// The tally of a layer or step of `rows` token rows: 0 decode, 1 prefill.
fn kind(rows: usize) -> usize {
    usize::from(rows > DECODE_MAX_ROWS)
}

/// The position of `phase` in [`PHASES`] (execution order).
fn index(phase: Phase) -> usize {
    PHASES.iter().position(|&p| p == phase).unwrap_or(0)
}

/// Accumulated nanoseconds per phase of one kind of layer.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ns: [u64; PHASES.len()],
    /// Time of phases run beside another one (see [`HostProfile::beside`]).
    beside_ns: [u64; PHASES.len()],
    /// Steps, and the placer's per-step bookkeeping in them (`begin_step`, `end_step`).
    steps: u64,
    step_ns: [u64; 2],
    layers: u64,
}

/// Host time per phase, summed over decode layers and prefill layers apart.
#[derive(Debug)]
pub struct HostProfile {
    enabled: bool,
    /// `[decode, prefill]`.
    tallies: [Tally; 2],
    /// The tally the current layer charges.
    current: usize,
    last: Option<Instant>,
}

impl HostProfile {
    /// On when [`MOE_PROFILE_ENV`] is `1`.
    pub fn from_env() -> Self {
        Self::new(std::env::var(MOE_PROFILE_ENV).is_ok_and(|v| v.trim() == "1"))
    }

    /// A profile that records only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tallies: [Tally::default(); 2],
            current: 0,
            last: None,
        }
    }

    /// Starts a layer of `rows` token rows.
    pub fn begin(&mut self, rows: usize) {
        self.last = None;
        if self.enabled {
            self.current = kind(rows);
            self.tallies[self.current].layers += 1;
            self.last = Some(Instant::now());
        }
    }

    /// Records `seconds` of `phase` that ran beside the current phase (on the same
    /// thread, inside the pool's job): reported apart, not in the layer's total.
    pub fn beside(&mut self, phase: Phase, seconds: f64) {
        if self.enabled {
            let i = index(phase);
            self.tallies[self.current].beside_ns[i] += (seconds * 1e9) as u64;
        }
    }

    /// Records a step of `rows` token rows whose placer bookkeeping took `begin_s` (at
    /// its start) and `end_s` (at its end: telemetry, feedback, refits).
    pub fn step(&mut self, rows: usize, begin_s: f64, end_s: f64) {
        if self.enabled {
            let t = &mut self.tallies[kind(rows)];
            t.steps += 1;
            t.step_ns[0] += (begin_s * 1e9) as u64;
            t.step_ns[1] += (end_s * 1e9) as u64;
        }
    }

    /// Charges the time since the last mark to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        let Some(t) = self.last.filter(|_| self.enabled) else {
            return;
        };
        let now = Instant::now();
        let i = index(phase);
        self.tallies[self.current].ns[i] += (now - t).as_nanos() as u64;
        self.last = Some(now);
    }

    /// The per-layer means of each kind of layer that ran; None when off or empty.
    pub fn report(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut out = Vec::new();
        for (kind, t) in ["decode", "prefill"].iter().zip(&self.tallies) {
            if t.layers == 0 {
                continue;
            }
            let per = |ns: u64| ns as f64 / 1e3 / t.layers as f64;
            let total: u64 = t.ns.iter().sum();
            let mut s = format!(
                "MoE layer host profile ({kind}): {} layers, {:.1} us a layer",
                t.layers,
                per(total)
            );
            for ((p, &ns), &beside) in PHASES.iter().zip(&t.ns).zip(&t.beside_ns) {
                s.push_str(&format!("\n  {:<10} {:>9.2} us", format!("{p:?}"), per(ns)));
                if beside > 0 {
                    s.push_str(&format!(" (+{:.2} us beside the CPU share)", per(beside)));
                }
            }
            if t.steps > 0 {
                let per_step = |ns: u64| ns as f64 / 1e3 / t.steps as f64;
                s.push_str(&format!(
                    "\n  placer per step ({} steps): begin_step {:.2} us, end_step {:.2} us",
                    t.steps,
                    per_step(t.step_ns[0]),
                    per_step(t.step_ns[1])
                ));
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
    fn an_off_profile_records_nothing_and_an_on_one_charges_each_phase() {
        let mut off = HostProfile::new(false);
        off.begin(1);
        off.lap(Phase::Place);
        assert!(off.report().is_none());
        let mut on = HostProfile::new(true);
        on.begin(1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        on.lap(Phase::Cpu);
        on.lap(Phase::Loads);
        let r = on.report().expect("a report");
        assert!(r.contains("1 layers"), "{r}");
        let cpu_line = r.lines().find(|l| l.contains("Cpu")).expect("Cpu line");
        let us: f64 = cpu_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(us >= 1000.0, "{r}");
        assert!(!r.contains("prefill"), "{r}");
    }

    #[test]
    fn time_beside_another_phase_is_reported_apart_from_the_total() {
        let mut p = HostProfile::new(true);
        p.begin(DECODE_MAX_ROWS + 1);
        p.beside(Phase::Submit, 5e-3);
        p.lap(Phase::Cpu);
        let r = p.report().expect("a report");
        let head: f64 = r
            .split("layers, ")
            .nth(1)
            .and_then(|t| t.split(" us").next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a total");
        assert!(head < 5000.0, "{r}");
        let submit = r
            .lines()
            .find(|l| l.contains("Submit"))
            .expect("Submit line");
        assert!(submit.contains("+5000.00 us beside"), "{r}");
    }

    #[test]
    fn prefill_layers_are_averaged_apart_from_decode_layers() {
        let mut p = HostProfile::new(true);
        p.begin(1);
        p.lap(Phase::Place);
        p.begin(DECODE_MAX_ROWS + 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.lap(Phase::Cpu);
        let r = p.report().expect("a report");
        let (decode, prefill) = r.split_once("(prefill)").expect("a prefill part");
        assert!(decode.contains("(decode): 1 layers"), "{r}");
        assert!(prefill.contains(": 1 layers"), "{r}");
        let cpu = |part: &str| -> f64 {
            let l = part.lines().find(|l| l.contains("Cpu")).expect("Cpu line");
            l.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        assert!(cpu(decode) < 1000.0 && cpu(prefill) >= 1000.0, "{r}");
    }
}
