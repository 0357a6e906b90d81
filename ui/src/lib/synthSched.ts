// A synthetic scheduler stream for the docs screenshot and tests at shapes this machine
// cannot run (Qwen3-30B-A3B: 48 layers × 128 experts, a 17 GB file, and no GPU here). It
// produces the same messages as the back end (model, frame, snapshot) from a small model of
// the real thing: skewed routing per layer (Zipf over a random order of experts), a
// frequency-valued VRAM cache holding a fraction of all experts (a miss is copied in only
// if it has been used more than the coldest resident expert, which it evicts; LFU with
// admission, like the engine's `lfu`/`value` policies keep hot experts), at most
// `fetchesPerLayer` copies per layer and step (the rest runs on the CPU), and layer times
// from a simple cost model. Nothing here is measured: the panel labels it "synthetic".
import type { Counters, SchedFrame, SchedMessage, SchedModel, SchedSnapshot, StepSummary } from "../services/schedTypes";
import { PLACE_CPU, PLACE_GPU_FETCH, PLACE_GPU_HIT, RES_ABSENT, RES_ARRIVED, RES_EVICTED, RES_RESIDENT } from "../services/schedTypes";

export interface SynthOptions {
  layers: number;
  experts: number;
  topK: number;
  /** Share of all experts the VRAM cache holds. */
  cacheFraction: number;
  fetchesPerLayer: number;
  /** Bytes of one expert (Qwen3-30B-A3B Q4_K_M: gate/up q4_K + down q6_K ≈ 3.06 MB). */
  expertBytes: number;
  /** Zipf exponent of the routing skew. */
  skew: number;
  seed: number;
}

export const QWEN3_30B_A3B: SynthOptions = {
  layers: 48, experts: 128, topK: 8, cacheFraction: 0.3, fetchesPerLayer: 2,
  expertBytes: 3_059_712, skew: 1.1, seed: 7,
};

/** Cost model of the synthetic machine (s): an H100 over PCIe 4 and a 16-core CPU. */
const COST = { cpuExpert: 70e-6, gpuExpert: 6e-6, gpuLaunch: 15e-6, pcieBytesPerS: 24e9, dense: 45e-6, overhead: 2e-3 };
/** Steps the counters average over (the back end's window). */
const WINDOW = 64;

/** Deterministic PRNG (mulberry32): the same stream for the same seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SynthScheduler {
  readonly model: SchedModel;
  private readonly rand: () => number;
  /** Per layer: cumulative routing weights over experts. */
  private readonly cdf: Float64Array[];
  private readonly n: number;
  private readonly slots: number;
  /** Resident experts, flat index → step of the last use. */
  private readonly resident = new Map<number, number>();
  private readonly uses: number[];
  private readonly hits: number[];
  private readonly fetches: number[];
  private readonly cpuRuns: number[];
  private readonly lastUse: number[];
  private readonly arrived = new Set<number>();
  private readonly evicted = new Set<number>();
  private readonly recent: StepSummary[] = [];
  step = -1;

  constructor(readonly o: SynthOptions) {
    this.rand = rng(o.seed);
    this.n = o.layers * o.experts;
    this.slots = Math.floor(o.cacheFraction * this.n);
    this.model = { name: `Qwen3-30B-A3B shape (synthetic stream)`, n_layers: o.layers, n_experts: o.experts, top_k: o.topK, expert_bytes: o.expertBytes };
    this.cdf = Array.from({ length: o.layers }, () => {
      const order = Array.from({ length: o.experts }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(this.rand() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      const w = new Float64Array(o.experts);
      order.forEach((e, rank) => (w[e] = 1 / Math.pow(rank + 1, o.skew)));
      let acc = 0;
      return w.map((x) => (acc += x));
    });
    const zeros = () => new Array<number>(this.n).fill(0);
    this.uses = zeros();
    this.hits = zeros();
    this.fetches = zeros();
    this.cpuRuns = zeros();
    this.lastUse = new Array<number>(this.n).fill(-1);
  }

  private pick(layer: number): number[] {
    const c = this.cdf[layer];
    const total = c[c.length - 1];
    const out: number[] = [];
    while (out.length < this.o.topK) {
      const x = this.rand() * total;
      let lo = 0;
      let hi = c.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (c[mid] < x) lo = mid + 1;
        else hi = mid;
      }
      if (!out.includes(lo)) out.push(lo);
    }
    return out;
  }

  /** The coldest resident expert not used in this step (fewest uses, then least
   * recently used), or -1. */
  private coldest(): number {
    let victim = -1;
    let best = Infinity;
    let bestT = Infinity;
    for (const [i, t] of this.resident) {
      if (t >= this.step) continue;
      const u = this.uses[i];
      if (u < best || (u === best && t < bestT)) {
        best = u;
        bestT = t;
        victim = i;
      }
    }
    return victim;
  }

  /** One decode step: the frame the back end would send for it. */
  next(): SchedMessage {
    this.step++;
    const o = this.o;
    this.arrived.clear();
    this.evicted.clear();
    const current: [number, number][][] = [];
    const layers: StepSummary["layers"] = [];
    const loaded: [number, number][] = [];
    const evicted: [number, number][] = [];
    let hits = 0;
    let pcieBytes = 0;
    for (let l = 0; l < o.layers; l++) {
      const sel: [number, number][] = [];
      let nGpu = 0;
      let nCpu = 0;
      let nFetch = 0;
      for (const e of this.pick(l)) {
        const i = l * o.experts + e;
        this.uses[i]++;
        this.lastUse[i] = this.step;
        let place = PLACE_CPU;
        if (this.resident.has(i)) {
          place = PLACE_GPU_HIT;
          this.hits[i]++;
          hits++;
        } else if (nFetch < o.fetchesPerLayer) {
          const full = this.resident.size >= this.slots;
          const out = full ? this.coldest() : -1;
          // Admission: when full, only an expert hotter than the coldest resident one.
          if (!full || (out >= 0 && this.uses[i] > this.uses[out])) {
            if (out >= 0) {
              this.resident.delete(out);
              evicted.push([Math.floor(out / o.experts), out % o.experts]);
              this.evicted.add(out);
            }
            place = PLACE_GPU_FETCH;
            // Evicted by an earlier layer of this step and fetched again: it is back.
            this.evicted.delete(i);
            this.fetches[i]++;
            loaded.push([l, e]);
            this.arrived.add(i);
            nFetch++;
          }
        }
        if (place === PLACE_CPU) {
          this.cpuRuns[i]++;
          nCpu++;
        } else {
          this.resident.set(i, this.step);
          nGpu++;
        }
        sel.push([e, place]);
      }
      current.push(sel);
      pcieBytes += nFetch * o.expertBytes;
      const cpu = nCpu * COST.cpuExpert;
      const pcie = (nFetch * o.expertBytes) / COST.pcieBytesPerS;
      const gpu = nGpu * COST.gpuExpert + COST.gpuLaunch;
      const finish = Math.max(cpu, gpu + pcie) + COST.dense;
      // "Measured": the prediction with ±15 % noise, as a calibrated model would see.
      layers.push({ cpu, gpu, pcie, finish, measured: finish * (0.85 + 0.3 * this.rand()) });
    }
    const predicted = layers.reduce((a, l) => a + l.finish, 0);
    const wall = layers.reduce((a, l) => a + l.measured, 0) + COST.overhead;
    const summary: StepSummary = {
      step: this.step, n_tokens: 1, wall_s: wall, predicted_s: predicted,
      accesses: o.layers * o.topK, hits, pcie_bytes: pcieBytes, layers,
    };
    this.recent.push(summary);
    if (this.recent.length > WINDOW) this.recent.shift();
    const frame: SchedFrame = {
      steps: 1, tokens: 1, last_step: this.step, lagged: 0, current,
      timeline: [summary], evicted, loaded, counters: this.counters(),
    };
    return { kind: "frame", ...frame };
  }

  private counters(): Counters {
    const r = this.recent;
    const sum = (f: (s: StepSummary) => number) => r.reduce((a, s) => a + f(s), 0);
    const wall = sum((s) => s.wall_s);
    const acc = sum((s) => s.accesses);
    const errs = r.flatMap((s) => s.layers.map((l) => Math.abs(l.finish - l.measured) / l.measured)).sort((a, b) => a - b);
    const cpuUses = sum((s) => s.layers.reduce((a, l) => a + Math.round(l.cpu / COST.cpuExpert), 0));
    return {
      window_steps: r.length,
      tok_s: r.length / wall,
      hit_rate: sum((s) => s.hits) / acc,
      pcie_gbps: sum((s) => s.pcie_bytes) / wall / 1e9,
      cpu_util: Math.min(1, sum((s) => s.layers.reduce((a, l) => a + l.cpu, 0)) / wall),
      gpu_util: Math.min(1, sum((s) => s.layers.reduce((a, l) => a + l.gpu, 0)) / wall),
      cost_error: errs.length ? errs[errs.length >> 1] : null,
      cpu_share: cpuUses / acc,
    };
  }

  /** The cache and statistics now, as the back end's periodic snapshot. */
  snapshot(): SchedMessage {
    const o = this.o;
    const residency = new Array<number>(this.n).fill(RES_ABSENT);
    for (const i of this.resident.keys()) residency[i] = this.arrived.has(i) ? RES_ARRIVED : RES_RESIDENT;
    for (const i of this.evicted) residency[i] = RES_EVICTED;
    // The policy's score: uses (higher stays longer).
    const score = [...this.uses];
    const snap: SchedSnapshot = {
      steps: this.step + 1, n_layers: o.layers, n_experts: o.experts, top_k: o.topK, expert_bytes: o.expertBytes,
      gpu: "H100 80GB (synthetic)",
      applied: { policy: "lfu", vram_budget_bytes: this.slots * o.expertBytes, prefetch: false, threads: 16 },
      cache_slots: this.slots, cache_resident: this.resident.size, cache_bytes_used: this.resident.size * o.expertBytes,
      stats: { uses: [...this.uses], hits: [...this.hits], fetches: [...this.fetches], cpu_runs: [...this.cpuRuns], last_use: [...this.lastUse] },
      score, residency, prediction_error: this.counters().cost_error,
    };
    return { kind: "snapshot", ...snap };
  }

  /** The whole opening of a stream: model, `warm` steps with snapshots every 16 steps. */
  warmUp(warm: number): SchedMessage[] {
    const out: SchedMessage[] = [{ kind: "model", model: this.model }];
    for (let k = 0; k < warm; k++) {
      out.push(this.next());
      if (k % 16 === 15) out.push(this.snapshot());
    }
    out.push(this.snapshot());
    return out;
  }
}
