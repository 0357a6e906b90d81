//! Opt-in profile of the GPU dense path (`HMOE_DENSE_PROFILE=1`): a CUDA event after every
//! launch of a layer call, so each kernel's share of the stream time (launch gaps included:
//! a kernel that waits for the host to enqueue it is charged the wait), and host clocks
//! around the call's preparation, enqueueing and synchronisation. Off by default: the
//! events cost a few microseconds per launch.

use super::drv;
use crate::error::Result;
use crate::DENSE_PROFILE_ENV;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use std::sync::Arc;
use std::time::Duration;

/// Stream time and count of one kind of step.
#[derive(Debug, Default, Clone)]
struct Bucket {
    name: &'static str,
    ms: f64,
    count: u64,
}

/// Calls of at most this many rows count as decode, the others as prefill.
const DECODE_ROWS: usize = 8;

/// Accumulated profile of one kind of call.
#[derive(Debug, Default)]
struct Calls {
    buckets: Vec<Bucket>,
    /// Host: building the call's tables and copying into the pinned buffer.
    prep: Duration,
    /// Host: issuing the copies and launches.
    enqueue: Duration,
    /// Host: waiting in the final synchronisation.
    wait: Duration,
    /// Host: of `prep`, copying the residual into the pinned buffer.
    stage_in: Duration,
    /// Host: after `wait`, copying the outputs out of the pinned buffer.
    stage_out: Duration,
    calls: u64,
    rows: u64,
}

/// Accumulated profile of the dense path's calls, decode and prefill apart.
pub(crate) struct DenseProfile {
    ctx: Arc<CudaContext>,
    events: Vec<CudaEvent>,
    marks: Vec<&'static str>,
    /// Whether the current call counts as decode.
    decode_call: bool,
    decode: Calls,
    prefill: Calls,
}

impl DenseProfile {
    /// A profile when [`DENSE_PROFILE_ENV`] is `1`.
    pub(crate) fn from_env(ctx: &Arc<CudaContext>) -> Option<Self> {
        std::env::var(DENSE_PROFILE_ENV)
            .is_ok_and(|v| v.trim() == "1")
            .then(|| Self {
                ctx: ctx.clone(),
                events: Vec::new(),
                marks: Vec::new(),
                decode_call: true,
                decode: Calls::default(),
                prefill: Calls::default(),
            })
    }

    /// Starts a call: the first event marks the stream position before its first step.
    pub(crate) fn begin(&mut self, stream: &CudaStream, rows: usize) -> Result<()> {
        self.marks.clear();
        self.decode_call = rows <= DECODE_ROWS;
        let c = self.calls_mut();
        c.calls += 1;
        c.rows += rows as u64;
        self.mark(stream, "")
    }

    /// Records the end of step `name` on the stream.
    pub(crate) fn mark(&mut self, stream: &CudaStream, name: &'static str) -> Result<()> {
        let i = self.marks.len();
        if self.events.len() == i {
            let e = self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate(dense profile)"))?;
            self.events.push(e);
        }
        self.events[i]
            .record(stream)
            .map_err(drv("cuEventRecord(dense profile)"))?;
        self.marks.push(name);
        Ok(())
    }

    fn calls_mut(&mut self) -> &mut Calls {
        if self.decode_call {
            &mut self.decode
        } else {
            &mut self.prefill
        }
    }

    /// Ends a call after the stream synchronised: charges each step its stream time.
    pub(crate) fn end(&mut self, prep: Duration, enqueue: Duration, wait: Duration) -> Result<()> {
        let mut times = Vec::with_capacity(self.marks.len());
        for i in 1..self.marks.len() {
            let ms = self.events[i - 1]
                .elapsed_ms(&self.events[i])
                .map_err(drv("cuEventElapsedTime(dense profile)"))? as f64;
            times.push((self.marks[i], ms));
        }
        let c = self.calls_mut();
        c.prep += prep;
        c.enqueue += enqueue;
        c.wait += wait;
        for (name, ms) in times {
            match c.buckets.iter_mut().find(|b| b.name == name) {
                Some(b) => {
                    b.ms += ms;
                    b.count += 1;
                }
                None => c.buckets.push(Bucket { name, ms, count: 1 }),
            }
        }
        Ok(())
    }

    /// Charges the current call's host copies into and out of the pinned buffer.
    pub(crate) fn staging(&mut self, stage_in: Duration, stage_out: Duration) {
        let c = self.calls_mut();
        c.stage_in += stage_in;
        c.stage_out += stage_out;
    }

    /// Tables of the profile (decode calls, then prefill calls).
    pub(crate) fn report(&self) -> String {
        format!(
            "dense path profile, decode calls (<= {DECODE_ROWS} rows): {}dense path profile, prefill calls: {}",
            self.decode.report(),
            self.prefill.report()
        )
    }
}

impl Calls {
    /// Per step, stream time per call and share; host times per call.
    fn report(&self) -> String {
        let calls = self.calls.max(1) as f64;
        let total: f64 = self.buckets.iter().map(|b| b.ms).sum();
        let mut s = format!(
            "{} calls, {:.1} rows a call; host per call: prepare {:.1} us (staging copy {:.1} us), enqueue {:.1} us, wait {:.1} us, copy-out {:.1} us; stream {:.1} us a call\n",
            self.calls,
            self.rows as f64 / calls,
            self.prep.as_secs_f64() * 1e6 / calls,
            self.stage_in.as_secs_f64() * 1e6 / calls,
            self.enqueue.as_secs_f64() * 1e6 / calls,
            self.wait.as_secs_f64() * 1e6 / calls,
            self.stage_out.as_secs_f64() * 1e6 / calls,
            total * 1e3 / calls
        );
        let mut b = self.buckets.clone();
        b.sort_by(|x, y| y.ms.total_cmp(&x.ms));
        for k in &b {
            s += &format!(
                "  {:<16} {:>8.1} us a call ({:>5.1}%), {} launches\n",
                k.name,
                k.ms * 1e3 / calls,
                100.0 * k.ms / total.max(1e-12),
                k.count
            );
        }
        s
    }
}
