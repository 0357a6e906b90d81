//! Device-side routing of decode layers (`route_resident`, route.cu).
//!
//! Without it the GPU sits idle between a layer's router and its experts while the host
//! reads the logits, routes, plans and launches the expert pass: ~20 us a layer, about a
//! millisecond a token (`HMOE_MOE_PROFILE=1`, docs/notes/bench-cuda.md). With it, the
//! engine launches a *routed pass* right behind the dense graph: the router's top-k on the
//! device and the fused pass over those of the selected experts whose weights are in VRAM,
//! found in a slot map the host keeps in mapped memory. The host then reads the choice
//! ([`GpuExperts::wait_routed`]) and runs only the rest (the CPU share, experts to copy)
//! while the routed pass computes; [`GpuExperts::finish_routed`] adds the rest's GPU output
//! to the routed pass's and hands the sum to the next dense call.
//!
//! The slot map names a slot only while its copy has landed and its owner stays: a copy
//! into a slot first takes the slot off the map ([`GpuExperts::unpublish_slot`]), after
//! settling every routed pass already launched, whose reads of the slot then count for the
//! copy's wait (`slot_release`); a slot goes on the map when the host sees its copy landed.

use super::dense_graphs::GraphCache;
use super::resident::launch_add_to;
use super::{drv, DeviceBuf, GpuExperts, Pinned, RELEASE_RING};
use crate::api::{DeviceAddend, DeviceInput, RoutedChoice};
use crate::batch::{pack, BatchItem, BatchLayout};
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::slots::Key;
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaEvent, LaunchConfig, PushKernelArg};
use std::time::{Duration, Instant};

/// The longest wait for a routed pass's choice before it counts as a device fault (a
/// decode layer takes ~0.1 ms).
const ROUTE_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Most experts per token route.cu handles (`ROUTE_MAX_K`).
const ROUTE_MAX_K: usize = 16;
/// Most experts per layer route.cu handles (32 lanes x `ROUTE_MAX_PER_LANE`).
const ROUTE_MAX_EXPERTS: usize = 256;

/// What a captured routed pass depends on besides the contents of its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoutedKey {
    layer: u16,
    /// gate/up and down kernel types, hidden, ffn.
    kernels: (KernelType, KernelType, usize, usize),
    rounds_itself: bool,
    /// Logits, hn, x, activations, index tables, output, counters, int8 products and
    /// scales, the arena, the map.
    buffers: [u64; 11],
}

/// A launched routed pass whose choice the host has not read yet.
#[derive(Debug, Clone, Copy)]
struct Launched {
    layer: u16,
    seq: u32,
    release: u16,
}

/// The routed pass's buffers and state ([`GpuExperts::enable_routing`]).
pub(super) struct Routed {
    n_layers: usize,
    n_experts: usize,
    top_k: usize,
    renorm: bool,
    hidden: usize,
    /// `u32 [n_layers][n_experts]`: slot + 1, or 0. Mapped: the kernel reads it over PCIe.
    map: Pinned,
    map_dev: u64,
    /// Per slot: the expert whose map entry names it.
    owner: Vec<Option<Key>>,
    /// The kernel's result (`res` in route.cu), mapped.
    res: Pinned,
    res_dev: u64,
    meta: DeviceBuf,
    seq: DeviceBuf,
    bl: BatchLayout,
    out: DeviceBuf,
    end: CudaEvent,
    graphs: GraphCache<RoutedKey>,
    /// Timing events (start, end) of the last two launches, alternating: a pass's times
    /// are read while the next one is in flight.
    timing: [[CudaEvent; 2]; 2],
    launches: u32,
    pending: Option<Launched>,
    /// A choice read early (by a copy that had to settle the pass first).
    ready: Option<RoutedChoice>,
}

impl Routed {
    fn map_word(&self, idx: usize) -> *mut u32 {
        // SAFETY (for callers): idx < n_layers * n_experts, the map's length in words.
        (self.map.ptr as *mut u32).wrapping_add(idx)
    }

    fn index(&self, key: Key) -> Option<usize> {
        let (l, e) = (key.0 as usize, key.1 as usize);
        (l < self.n_layers && e < self.n_experts).then_some(l * self.n_experts + e)
    }
}

impl GpuExperts {
    /// Turns on device-side routing for a model of `n_layers` layers of `n_experts`
    /// experts, `top_k` a token (`renorm`: the chosen weights sum to one), `hidden` wide.
    /// Errors (and leaves it off) when the kernels or the shape do not allow it.
    pub fn enable_routing(
        &mut self,
        n_layers: usize,
        (n_experts, top_k, renorm): (usize, usize, bool),
        hidden: usize,
    ) -> Result<()> {
        let Some(_) = &self.route_fns else {
            return Err(CudaError::InvalidBatch(
                "the loaded kernels have no route_resident".into(),
            ));
        };
        if top_k == 0 || top_k > ROUTE_MAX_K.min(n_experts) || n_experts > ROUTE_MAX_EXPERTS {
            return Err(CudaError::InvalidBatch(format!(
                "device routing takes up to {ROUTE_MAX_EXPERTS} experts and {ROUTE_MAX_K} a \
                 token, not {top_k} of {n_experts}"
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let words = n_layers * n_experts;
        let (mut map, map_dev) = Pinned::mapped(4 * words, "routing slot map")?;
        map.bytes().fill(0);
        let (mut res, res_dev) = Pinned::mapped(4 * (3 + 2 * top_k), "routing result")?;
        res.bytes().fill(0);
        let (rows, weights) = ([0u32], [0f32]);
        let items: Vec<BatchItem<'_>> = (0..top_k as u32)
            .map(|rank| BatchItem {
                gate: 0,
                up: 0,
                down: 0,
                rows: &rows,
                weights: &weights,
                rank,
            })
            .collect();
        let bl = pack(&items, 1, &mut Vec::new())?;
        let seq = DeviceBuf::new(4, "routing counter")?;
        // SAFETY: seq holds 4 bytes.
        unsafe { cu::memset_d8_sync(seq.ptr, 0, 4) }.map_err(drv("cuMemsetD8(routing)"))?;
        let end = self
            .ctx
            .new_event(None)
            .map_err(drv("cuEventCreate(routed pass)"))?;
        let timing_event = || {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate(routed timing)"))
        };
        let timing = [
            [timing_event()?, timing_event()?],
            [timing_event()?, timing_event()?],
        ];
        let r = Routed {
            n_layers,
            n_experts,
            top_k,
            renorm,
            hidden,
            map,
            map_dev,
            owner: vec![None; self.n_slots],
            res,
            res_dev,
            meta: DeviceBuf::new(bl.bytes, "routed index tables")?,
            seq,
            bl,
            out: DeviceBuf::new(4 * hidden, "routed pass output")?,
            end,
            graphs: GraphCache::from_env(),
            timing,
            launches: 0,
            pending: None,
            ready: None,
        };
        // Slots already landed go on the map now; later ones as they land.
        let landed: Vec<usize> = (0..self.n_slots).filter(|&s| self.landed[s]).collect();
        self.routed = Some(r);
        for s in landed {
            self.publish_slot(s);
        }
        Ok(())
    }

    /// Launches the routed pass of decode layer `layer` (one token; experts laid out as
    /// `layout`) on the compute stream after `after` (a raw `CUevent` recorded behind the
    /// dense call that wrote the router `logits` and the normed state `hn`, both on the
    /// device). Read its choice with [`GpuExperts::wait_routed`] before anything else.
    pub fn launch_routed(
        &mut self,
        layer: u16,
        layout: &ExpertLayout,
        (logits, hn): (u64, DeviceInput),
        after: u64,
    ) -> Result<()> {
        let r = match self.launch_routed_inner(layer, layout, (logits, hn), after) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // The counter and the map may be out of step with the host: start over without it.
        self.routed = None;
        self.forget_all_slots();
        Err(r)
    }

    fn launch_routed_inner(
        &mut self,
        layer: u16,
        layout: &ExpertLayout,
        (logits, hn): (u64, DeviceInput),
        after: u64,
    ) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.settle_routed()?;
        let Some(r) = self.routed.as_ref() else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        let (k, bl, hidden, ffn) = (r.top_k, r.bl, layout.hidden, layout.ffn);
        if hn.values != hidden || hidden != r.hidden || !self.fused.takes(&bl) {
            return Err(CudaError::InvalidBatch(format!(
                "a routed pass takes one row of {} on the fused pass, not {} values",
                r.hidden, hn.values
            )));
        }
        self.fused.ensure_counters(k, ffn)?;
        self.x_dev.ensure(hidden * 4, "layer input")?;
        self.act_dev.ensure(k * ffn * 4, "SwiGLU activations")?;
        let rounds_itself = self.fused.rounds_input_itself(layout);
        let cs = self.compute.cu_stream();
        // SAFETY: `after` is a live CUevent of the dense path (the caller's contract).
        unsafe {
            cu::stream::wait_event(
                cs,
                after as sys::CUevent,
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(drv("cuStreamWaitEvent(router)"))?;
        let Some(r) = self.routed.as_ref() else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        let pair = (r.launches.wrapping_add(1) % 2) as usize;
        r.timing[pair][0]
            .record(&self.compute)
            .map_err(drv("cuEventRecord(routed start)"))?;
        let [counters, q8, q8_scales] = self.fused.buffer_ptrs();
        let (out, meta, map_dev) = (r.out.ptr, r.meta.ptr, r.map_dev);
        let key = RoutedKey {
            layer,
            kernels: (layout.gate_up, layout.down, hidden, ffn),
            rounds_itself,
            buffers: [
                logits,
                hn.ptr,
                self.x_dev.ptr,
                self.act_dev.ptr,
                meta,
                out,
                counters,
                q8,
                q8_scales,
                self.arena.ptr,
                map_dev,
            ],
        };
        self.x_in = rounds_itself.then_some(hn.ptr);
        self.pass_out = Some(out);
        let launched = (|| {
            let mut graphs = match self.routed.as_mut() {
                Some(r) => std::mem::take(&mut r.graphs),
                None => return Err(CudaError::InvalidBatch("device routing is off".into())),
            };
            let res = if graphs.enabled() {
                graphs
                    .ensure(&self.compute, key, || {
                        self.enqueue_routed(layer, layout, (logits, hn.ptr), rounds_itself)
                    })
                    .and_then(|()| graphs.launch(key))
            } else {
                self.enqueue_routed(layer, layout, (logits, hn.ptr), rounds_itself)
            };
            if let Some(r) = self.routed.as_mut() {
                r.graphs = graphs;
            }
            res
        })();
        self.pass_out = None;
        launched?;
        let rel = self.release_next;
        self.release_next = (rel + 1) % RELEASE_RING;
        self.release_ring[rel]
            .record(&self.compute)
            .map_err(drv("cuEventRecord(routed release)"))?;
        let Some(r) = self.routed.as_mut() else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        r.end
            .record(&self.compute)
            .map_err(drv("cuEventRecord(routed pass)"))?;
        r.timing[pair][1]
            .record(&self.compute)
            .map_err(drv("cuEventRecord(routed end)"))?;
        r.launches = r.launches.wrapping_add(1);
        r.pending = Some(Launched {
            layer,
            seq: r.launches,
            release: rel as u16,
        });
        Ok(())
    }

    /// Enqueues what [`GpuExperts::launch_routed`] captures: `route_resident`, the input's
    /// rounding (unless the int8 pass rounds it itself), the fused gate_up over `top_k`
    /// items (misses have no pairs) and down + combine into the routed output.
    fn enqueue_routed(
        &self,
        layer: u16,
        layout: &ExpertLayout,
        (logits, hn): (u64, u64),
        rounds_itself: bool,
    ) -> Result<()> {
        let (Some(r), Some((route, _))) = (self.routed.as_ref(), self.route_fns.as_ref()) else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        let bl = r.bl;
        let (ne, k, renorm) = (r.n_experts as u32, r.top_k as u32, r.renorm as u32);
        let map = r.map_dev + (layer as u64 * r.n_experts as u64 * 4);
        let (slot_bytes, gate_bytes) = (self.cfg.slot_bytes as u64, layout.gate_bytes() as u64);
        let offs = [bl.rows, bl.weights, bl.tok_start, bl.tok_pairs, bl.tok_down].map(|o| o as u32);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches route_resident in route.cu; `map` is the layer's row of the
        // mapped slot map, `res` the mapped result of 3 + 2 top_k words, `meta` holds the
        // index tables laid out as `bl` (top_k one-row items), `seq` one u32.
        unsafe {
            self.compute
                .launch_builder(route)
                .arg(&logits)
                .arg(&ne)
                .arg(&k)
                .arg(&renorm)
                .arg(&map)
                .arg(&self.arena.ptr)
                .arg(&slot_bytes)
                .arg(&gate_bytes)
                .arg(&r.meta.ptr)
                .arg(&offs[0])
                .arg(&offs[1])
                .arg(&offs[2])
                .arg(&offs[3])
                .arg(&offs[4])
                .arg(&r.res_dev)
                .arg(&r.seq.ptr)
                .launch(cfg)
        }
        .map_err(drv("launch route_resident"))?;
        if !rounds_itself {
            self.round_acts_from(layout.gate_up, hn, 1, layout.hidden)?;
        }
        let fns = self.fused_fns(layout)?;
        let m = r.meta.ptr;
        self.launch_gate_up_fused(layout, &fns, (m + bl.items as u64, m + bl.rows as u64, k))?;
        self.launch_down_combine(layout, &fns, m, &bl)
    }

    /// The number of the last routed pass launched (its times: [`GpuExperts::routed_gpu_ms`]).
    pub fn routed_launches(&self) -> u32 {
        self.routed.as_ref().map_or(0, |r| r.launches)
    }

    /// GPU milliseconds of routed pass number `launch` (route, rounding, fused pass), once
    /// it has finished; None when its events were reused since (two launches later).
    pub fn routed_gpu_ms(&self, launch: u32) -> Result<Option<f32>> {
        let Some(r) = self.routed.as_ref() else {
            return Ok(None);
        };
        if r.launches.wrapping_sub(launch) >= 2 {
            return Ok(None);
        }
        let [start, end] = &r.timing[(launch % 2) as usize];
        end.synchronize()
            .map_err(drv("cuEventSynchronize(routed end)"))?;
        start
            .elapsed_ms(end)
            .map(Some)
            .map_err(drv("cuEventElapsedTime(routed pass)"))
    }

    /// The choice of the last routed pass (None when none is pending): waits for the
    /// device router (a few microseconds after the dense call returns), then marks the
    /// slots the pass reads as read by it.
    pub fn wait_routed(&mut self) -> Result<Option<RoutedChoice>> {
        self.settle_routed()?;
        Ok(self.routed.as_mut().and_then(|r| r.ready.take()))
    }

    /// Reads a pending routed pass's choice into `ready` (a copy into a slot must know
    /// every pass that may read it before it is issued).
    pub(super) fn settle_routed(&mut self) -> Result<()> {
        let Some(p) = self.routed.as_mut().and_then(|r| r.pending.take()) else {
            return Ok(());
        };
        let choice = match self.collect_routed(p) {
            Ok(c) => c,
            Err(e) => {
                self.routed = None;
                self.forget_all_slots();
                return Err(e);
            }
        };
        if let Some(r) = self.routed.as_mut() {
            r.ready = Some(choice);
        }
        Ok(())
    }

    fn collect_routed(&mut self, p: Launched) -> Result<RoutedChoice> {
        let Some(r) = self.routed.as_ref() else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        let words = r.res.ptr as *const u32;
        let read = |i: usize| {
            // SAFETY: res holds 3 + 2 top_k words; the kernel writes them through PCIe,
            // so every read goes to memory.
            unsafe { std::ptr::read_volatile(words.add(i)) }
        };
        let t0 = Instant::now();
        let mut spins = 0u32;
        while read(0) != p.seq {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && t0.elapsed() > ROUTE_WAIT_LIMIT {
                return Err(CudaError::Driver {
                    op: "device routing".into(),
                    detail: format!(
                        "no result from route_resident of layer {} after {:?}",
                        p.layer, ROUTE_WAIT_LIMIT
                    ),
                });
            }
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let k = r.top_k;
        let mask = read(2);
        let mut c = RoutedChoice {
            ids: Vec::with_capacity(k),
            weights: Vec::with_capacity(k),
            ran: Vec::with_capacity(k),
        };
        let mut read_slots = Vec::with_capacity(k);
        for rank in 0..k {
            let id = read(3 + rank);
            c.ids.push(id as u16);
            c.weights.push(f32::from_bits(read(3 + k + rank)));
            let ran = mask & (1 << rank) != 0;
            c.ran.push(ran);
            if let Some(idx) = ran.then(|| r.index((p.layer, id as u16))).flatten() {
                // SAFETY: idx is inside the map (Routed::index).
                let s1 = unsafe { std::ptr::read_volatile(r.map_word(idx)) };
                if s1 > 0 {
                    read_slots.push(s1 as usize - 1);
                }
            }
        }
        for s in read_slots {
            if let Some(rel) = self.slot_release.get_mut(s) {
                *rel = Some(p.release);
            }
            self.table.touch(s as u32);
        }
        Ok(c)
    }

    /// The routed pass's output as the next dense call's addend, with `rest` (the GPU
    /// output of the layer's other experts, submitted after it on the same stream) added
    /// into it first.
    pub fn finish_routed(&mut self, rest: Option<DeviceAddend>) -> Result<DeviceAddend> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let (Some(r), Some((_, add))) = (self.routed.as_ref(), self.route_fns.as_ref()) else {
            return Err(CudaError::InvalidBatch("device routing is off".into()));
        };
        let (out, hidden) = (r.out.ptr, r.hidden);
        if let Some(a) = rest {
            if a.values != hidden {
                return Err(CudaError::InvalidBatch(format!(
                    "the rest of a routed layer has {} values, not {hidden}",
                    a.values
                )));
            }
            // Both buffers hold `hidden` floats; the rest's pass precedes this on the stream.
            launch_add_to(&self.compute, add, out, a.ptr, hidden as u64)?;
            r.end
                .record(&self.compute)
                .map_err(drv("cuEventRecord(routed pass)"))?;
        }
        Ok(DeviceAddend {
            ptr: out,
            values: hidden,
            event: r.end.cu_event() as u64,
        })
    }

    /// Puts slot `s` on the routing map under its owner (its copy has landed).
    pub(super) fn publish_slot(&mut self, s: usize) {
        let owner = self.table.owner(s as u32);
        let Some(r) = self.routed.as_mut() else {
            return;
        };
        let Some((key, idx)) = owner.and_then(|k| Some((k, r.index(k)?))) else {
            return;
        };
        // SAFETY: idx is inside the map.
        unsafe { std::ptr::write_volatile(r.map_word(idx), s as u32 + 1) };
        if let Some(o) = r.owner.get_mut(s) {
            *o = Some(key);
        }
    }

    /// Takes slot `s` off the routing map (its weights are about to change).
    pub(super) fn unpublish_slot(&mut self, s: usize) {
        let Some(r) = self.routed.as_mut() else {
            return;
        };
        let Some(key) = r.owner.get_mut(s).and_then(|o| o.take()) else {
            return;
        };
        if let Some(idx) = r.index(key) {
            let w = r.map_word(idx);
            // SAFETY: idx is inside the map. An entry that names another slot (the
            // expert moved and landed there) stays.
            unsafe {
                if std::ptr::read_volatile(w) == s as u32 + 1 {
                    std::ptr::write_volatile(w, 0);
                }
            }
        }
    }

    /// Forgets which expert each slot holds (the scheduler's cache starts over: a new
    /// policy or budget), so that no slot outside the new plan is used again, by the
    /// routed pass or a plan's hit, and uses only slots `0..limit` from now on (the
    /// scheduler's cache; `None`: the whole arena). Waits for a pending routed pass first.
    pub fn forget_experts(&mut self, limit: Option<usize>) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.settle_routed()?;
        if let Some(r) = self.routed.as_mut() {
            r.ready = None;
        }
        self.forget_all_slots();
        self.table.reset(limit);
        Ok(())
    }

    /// Forgets every slot's contents (after a device error), on the map too.
    pub(super) fn forget_all_slots(&mut self) {
        self.table.clear();
        if let Some(r) = self.routed.as_mut() {
            r.map.bytes().fill(0);
            r.owner.iter_mut().for_each(|o| *o = None);
        }
    }
}
