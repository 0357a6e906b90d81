import { describe, expect, it } from "vitest";
import { setTransport } from "../services/ipc";
import type { SchedFrame, SchedSnapshot, StepSummary, WhatIfReport } from "../services/schedTypes";
import { RES_ABSENT, RES_ARRIVED, RES_EVICTED, RES_RESIDENT } from "../services/schedTypes";
import { SchedulerStore } from "../stores/scheduler";
import { FakeTransport } from "../test/fakeTransport";
import { whatIfChart } from "./schedChart";
import {
  cellRgb, clamp01, criticalSide, GLOW_STEPS, heatRgb, luminance, MARK_MS, mix, PALETTE, placementRgb, setLightTheme, type CellInput,
} from "./schedColors";
import { cellAt, gridLayout, heatFromUses, HISTORY_STEPS, PanelModel, series, stepValue } from "./schedModel";

const model = { name: "m", n_layers: 2, n_experts: 4, top_k: 2, expert_bytes: 1000 };

function step(i: number, over: Partial<StepSummary> = {}): StepSummary {
  return {
    step: i, n_tokens: 1, wall_s: 0.01, predicted_s: 0.002, accesses: 4, hits: 1, pcie_bytes: 2e6,
    layers: [
      { cpu: 0.001, gpu: 0, pcie: 0, finish: 0.001, measured: 0.002 },
      { cpu: 0.001, gpu: 0, pcie: 0, finish: 0.001, measured: 0.001 },
    ],
    ...over,
  };
}

function frame(over: Partial<SchedFrame> = {}): SchedFrame {
  return {
    steps: 1, tokens: 1, last_step: 5, lagged: 0,
    current: [[[1, 2], [3, 0]], [[0, 1]]],
    timeline: [step(5)], evicted: [[1, 2]], loaded: [[0, 3]],
    counters: { window_steps: 1, tok_s: 100, hit_rate: 0.25, pcie_gbps: 0.2, cpu_util: 0.3, gpu_util: 0, cost_error: 0.25, cpu_share: 0.75 },
    ...over,
  };
}

function snapshot(over: Partial<SchedSnapshot> = {}): SchedSnapshot {
  return {
    steps: 6, n_layers: 2, n_experts: 4, top_k: 2, expert_bytes: 1000, gpu: null,
    applied: { policy: "value", vram_budget_bytes: null, prefetch: true, threads: 2 },
    cache_slots: 0, cache_resident: 0, cache_bytes_used: 0,
    stats: { uses: [4, 2, 0, 1, 0, 0, 8, 2], hits: [1, 0, 0, 0, 0, 0, 0, 0], fetches: [0, 0, 0, 0, 0, 0, 0, 0], cpu_runs: [3, 2, 0, 1, 0, 0, 8, 2], last_use: [5, 3, -1, 5, -1, -1, 5, 2] },
    score: [0.5, 0.1, 0, 0.2, 0, 0, 0.9, 0.3],
    residency: [1, 0, 0, 2, 0, 0, 3, 0],
    prediction_error: 0.1,
    ...over,
  };
}

describe("PanelModel aggregation", () => {
  it("sizes the grid from the model and marks the current token's selection", () => {
    const p = new PanelModel();
    p.apply({ kind: "model", model }, 0);
    expect(p.grid.residency.length).toBe(8);
    const v = p.version;
    p.apply({ kind: "frame", ...frame() }, 1000);
    expect(p.version).toBeGreaterThan(v);
    // Layer 0 selected experts 1 (CPU) and 3 (GPU hit); layer 1 expert 0 (fetch).
    expect(Array.from(p.grid.place)).toEqual([-1, 2, -1, 0, 1, -1, -1, -1]);
    expect(p.grid.selectedStep[1]).toBe(5);
    expect(p.grid.selectedStep[0]).toBe(-Infinity);
    expect(p.grid.evictedAt[1 * 4 + 2]).toBe(1000);
    expect(p.grid.residency[1 * 4 + 2]).toBe(RES_EVICTED);
    expect(p.grid.residency[3]).toBe(RES_ARRIVED);
    expect(p.steps).toBe(1);
    expect(p.lastStep).toBe(5);
    expect(p.marking(1500, MARK_MS)).toBe(true);
    expect(p.marking(1000 + MARK_MS, MARK_MS)).toBe(false);
    expect(p.counters?.tok_s).toBe(100);
  });

  it("ignores selections outside the grid and caps the history", () => {
    const p = new PanelModel();
    p.apply({ kind: "model", model }, 0);
    p.apply({ kind: "frame", ...frame({ current: [[[99, 0]], [], [[1, 1]]], evicted: [[7, 0]], loaded: [] }) }, 5);
    expect(Array.from(p.grid.place).every((x) => x === -1)).toBe(true);
    for (let i = 0; i < HISTORY_STEPS + 30; i++) p.apply({ kind: "frame", ...frame({ timeline: [step(i)] }) }, i);
    expect(p.history.length).toBe(HISTORY_STEPS);
    expect(p.history[p.history.length - 1].step).toBe(HISTORY_STEPS + 29);
  });

  it("takes residency, heat and per-expert stats from snapshots", () => {
    const p = new PanelModel();
    p.apply({ kind: "model", model }, 0);
    p.apply({ kind: "frame", ...frame() }, 10);
    p.apply({ kind: "snapshot", ...snapshot() }, 20);
    expect(Array.from(p.grid.residency)).toEqual([RES_RESIDENT, 0, 0, RES_ARRIVED, 0, 0, RES_EVICTED, 0]);
    // Heat is relative to the most used expert of the layer.
    expect(p.grid.heat[0]).toBe(1);
    expect(p.grid.heat[1]).toBeCloseTo(0.5);
    expect(p.grid.heat[6]).toBe(1);
    expect(p.grid.heat[7]).toBeCloseTo(0.25);
    const e = p.expert(0, 3);
    expect(e).toMatchObject({ uses: 1, cpuRuns: 1, lastUse: 5, stepsAgo: 0, score: 0.2, residency: RES_ARRIVED, place: 0 });
    expect(p.expert(1, 0)?.lastUse).toBe(-1);
    expect(p.expert(2, 0)).toBeNull();
    expect(p.vram).toEqual([0]);
    // A snapshot of a different shape resets the grid to it.
    p.apply({ kind: "snapshot", ...snapshot({ n_layers: 1, n_experts: 8 }) }, 30);
    expect([p.grid.nLayers, p.grid.nExperts]).toEqual([1, 8]);
    // A new model clears everything.
    p.apply({ kind: "model", model: null }, 40);
    expect(p.grid.residency.length).toBe(0);
    expect(p.history.length).toBe(0);
    expect(p.counters).toBeNull();
  });

  it("computes per-step series for the sparklines", () => {
    const s = step(1);
    expect(stepValue(s, "tok_s")).toBeCloseTo(100);
    expect(stepValue(s, "hit_rate")).toBeCloseTo(0.25);
    expect(stepValue(s, "pcie_gbps")).toBeCloseTo(0.2);
    expect(stepValue(s, "cpu_util")).toBeCloseTo(0.3);
    expect(stepValue(s, "gpu_util")).toBe(0);
    // Errors 0.5 and 0: median 0.25.
    expect(stepValue(s, "cost_error")).toBeCloseTo(0.25);
    const unmeasured = step(2, { layers: [{ cpu: 1, gpu: 0, pcie: 0, finish: 1, measured: -1 }], wall_s: 0 });
    expect(stepValue(unmeasured, "cost_error")).toBeNull();
    expect(stepValue(unmeasured, "tok_s")).toBeNull();
    expect(series([s, unmeasured, step(3)], "tok_s")).toHaveLength(2);
    const heat = new Float32Array(4);
    heatFromUses([0, 0, 2, 4], 1, 4, heat);
    expect(Array.from(heat)).toEqual([0, 0, 0.5, 1]);
  });

  it("maps points to cells and sizes the canvas", () => {
    expect(gridLayout(512, 48, 128)).toMatchObject({ cellW: 4, cellH: 4, height: 192, gap: 0 });
    const tiny = gridLayout(480, 4, 16);
    expect(tiny.cellW).toBe(30);
    expect(tiny.cellH).toBe(22);
    expect(tiny.gap).toBe(1);
    expect(cellAt(5, 5, 512, 48, 128)).toEqual({ layer: 1, expert: 1 });
    expect(cellAt(511, 191, 512, 48, 128)).toEqual({ layer: 47, expert: 127 });
    expect(cellAt(600, 5, 512, 48, 128)).toBeNull();
    expect(cellAt(5, 500, 512, 48, 128)).toBeNull();
    expect(gridLayout(100, 0, 0).height).toBe(0);
  });
});

describe("colour mapping", () => {
  const base: CellInput = { residency: RES_ABSENT, heat: 0, place: -1, selectedAgo: Infinity, evictedAgo: Infinity, arrivedAgo: Infinity };

  it("heat brightens with use and clamps", () => {
    expect(luminance(heatRgb(0))).toBeLessThan(luminance(heatRgb(0.3)));
    expect(luminance(heatRgb(0.3))).toBeLessThan(luminance(heatRgb(1)));
    expect(heatRgb(5)).toEqual(heatRgb(1));
    expect(heatRgb(-1)).toEqual(heatRgb(0));
    expect(heatRgb(NaN)).toEqual(PALETTE.empty);
    expect(clamp01(Infinity)).toBe(1);
  });

  it("placements have distinct colours and a fresh selection shows its placement", () => {
    const cols = [0, 1, 2].map((p) => placementRgb(p).join());
    expect(new Set(cols).size).toBe(3);
    expect(cellRgb({ ...base, place: 2, selectedAgo: 0 })).toEqual(PALETTE.cpu);
    expect(cellRgb({ ...base, place: 0, selectedAgo: 0 })).toEqual(PALETTE.gpuHit);
    expect(cellRgb({ ...base, place: 1, selectedAgo: 0, residency: RES_RESIDENT })).toEqual(PALETTE.gpuFetch);
  });

  it("glows and marks fade back to the base colour", () => {
    const half = cellRgb({ ...base, place: 2, selectedAgo: GLOW_STEPS / 2 });
    expect(half).not.toEqual(PALETTE.cpu);
    expect(half).not.toEqual(PALETTE.empty);
    expect(cellRgb({ ...base, place: 2, selectedAgo: GLOW_STEPS })).toEqual(PALETTE.empty);
    expect(cellRgb({ ...base, evictedAgo: 0 })).toEqual(PALETTE.evicted);
    expect(cellRgb({ ...base, evictedAgo: MARK_MS })).toEqual(PALETTE.empty);
    expect(cellRgb({ ...base, residency: RES_RESIDENT })).toEqual(PALETTE.resident);
    expect(cellRgb({ ...base, residency: RES_ARRIVED, arrivedAgo: 0 })).toEqual(PALETTE.arrived);
    // Residents stay resident-coloured whatever their heat.
    expect(cellRgb({ ...base, residency: RES_RESIDENT, heat: 1 })).toEqual(PALETTE.resident);
  });

  it("switches neutral colours with the page theme", () => {
    setLightTheme(true);
    const light = luminance(heatRgb(0));
    expect(luminance(PALETTE.predicted)).toBeLessThan(100);
    setLightTheme(false);
    expect(luminance(heatRgb(0))).toBeLessThan(light);
    expect(luminance(PALETTE.predicted)).toBeGreaterThan(200);
  });

  it("mixes and picks the critical side", () => {
    expect(mix([0, 0, 0], [100, 200, 50], 0.5)).toEqual([50, 100, 25]);
    expect(criticalSide(2, 1, 0)).toBe("cpu");
    expect(criticalSide(1, 2, 0.2)).toBe("gpu");
    expect(criticalSide(1, 2, 1.5)).toBe("pcie");
    expect(criticalSide(0, 0, 0)).toBe("cpu");
  });
});

describe("what-if chart", () => {
  const report: WhatIfReport = {
    steps: 10, tokens: 10, warmup_steps: 2, profile: "h100", shape: "s", current_policy: "lru",
    policies: ["cpu-only", "lru", "value+pf"], sizes: ["5%", "10%"],
    rows: ["5%", "10%"].flatMap((size, i) => [
      { policy: "cpu-only", size, cache_fraction: 0.05, hit_rate: 0, belady_hit_rate: 0.5, tok_s: 30, speedup: 1, pcie_bytes_per_token: 0 },
      { policy: "lru", size, cache_fraction: 0.05, hit_rate: 0.2 + i * 0.2, belady_hit_rate: 0.5, tok_s: 40 + i * 30, speedup: 1.3, pcie_bytes_per_token: 1 },
      { policy: "value+pf", size, cache_fraction: 0.05, hit_rate: 0.3 + i * 0.2, belady_hit_rate: 0.5, tok_s: 45 + i * 40, speedup: 1.5, pcie_bytes_per_token: 1 },
    ]),
  };

  it("builds one series per policy over the sizes, with the policy in use marked", () => {
    const c = whatIfChart(report);
    expect(c.sizes).toEqual(["5%", "10%"]);
    expect(c.hit.map((s) => s.policy)).toEqual(["cpu-only", "lru", "value+pf"]);
    expect(c.hit[1].values).toEqual([0.2, 0.4]);
    expect(c.tok[2].values).toEqual([45, 85]);
    expect(c.hit.filter((s) => s.current).map((s) => s.policy)).toEqual(["lru"]);
    expect(c.tokMax).toBe(100);
    expect(new Set(c.hit.map((s) => s.color)).size).toBe(3);
  });
});

describe("scheduler store", () => {
  it("subscribes once, feeds the panel, and unsubscribes when the last panel closes", async () => {
    const t = new FakeTransport()
      .on("sched_subscribe", () => 7)
      .on("sched_unsubscribe", () => true)
      .on("sched_options_get", () => ({ requested: { threads: 0, policy: "value", vram_budget_bytes: null, prefetch: true }, applied: null, gpu: null, policies: ["value", "lru"] }))
      .on("sched_whatif", (a) => ({ ...{ steps: 1, tokens: 1, warmup_steps: 0, profile: "h100", shape: "s", current_policy: "value", policies: [], sizes: [], rows: [] }, from: a }));
    setTransport(t);
    const s = new SchedulerStore();
    await Promise.all([s.open(), s.open()]);
    expect(t.calls.filter((c) => c.cmd === "sched_subscribe")).toHaveLength(1);
    const ch = t.lastChannel<unknown>();
    ch.onmessage({ kind: "model", model });
    ch.onmessage({ kind: "frame", ...frame() });
    expect(s.panel.steps).toBe(1);
    expect(s.get().model?.n_experts).toBe(4);
    await new Promise((r) => setTimeout(r, 0));
    expect(s.get().options?.policies).toEqual(["value", "lru"]);
    await s.runWhatIf();
    const call = t.calls.find((c) => c.cmd === "sched_whatif");
    expect(call?.args).toEqual({ request: { from_step: null, profile: "h100" } });
    s.close();
    expect(t.calls.filter((c) => c.cmd === "sched_unsubscribe")).toHaveLength(0);
    s.close();
    expect(t.calls.filter((c) => c.cmd === "sched_unsubscribe")).toEqual([{ cmd: "sched_unsubscribe", args: { id: 7 } }]);
  });
});
