// The panel's saved view settings (store, folding, window, overlays, palette) and the
// shared HiDPI canvas helper.
import { act, cleanup, fireEvent, render, screen } from "@testing-library/preact";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { App } from "../app";
import { PALETTE, placementRgb, setPalette } from "../lib/schedColors";
import { fitCanvas, MAX_DPR } from "../lib/useCanvas";
import { setTransport } from "../services/ipc";
import { DEFAULT_PANEL_SETTINGS, MAX_WINDOW_STEPS, MIN_WINDOW_STEPS, type PanelSettings, type StepSummary } from "../services/schedTypes";
import { clampWindow, panelSettingsStore, PanelSettingsStore, SAVE_DELAY_MS } from "../stores/panelSettings";
import { schedulerStore } from "../stores/scheduler";
import { FakeTransport } from "../test/fakeTransport";
import { SchedulerPanel } from "./SchedulerPanel";
import { timelineColumns } from "./SchedulerTimeline";

const model = { name: "m", n_layers: 2, n_experts: 4, top_k: 2, expert_bytes: 1000 };

function step(i: number): StepSummary {
  return {
    step: i, n_tokens: 1, wall_s: 0.01, predicted_s: 0.002, accesses: 4, hits: 1, pcie_bytes: 0,
    layers: [{ cpu: 0.001, gpu: 0, pcie: 0, finish: 0.001, measured: 0.002 }],
  };
}

/** A transport whose `panel_settings_set` stores what it gets (like the back end). */
function transport(saved: Partial<PanelSettings> | null) {
  let stored: PanelSettings = { ...DEFAULT_PANEL_SETTINGS, ...saved };
  const t = new FakeTransport()
    .on("panel_settings_get", () => stored)
    .on("panel_settings_set", (a) => {
      stored = a.settings as PanelSettings;
      return stored;
    })
    .on("sched_subscribe", () => 1)
    .on("sched_unsubscribe", () => true)
    .on("sched_options_get", () => ({ requested: { threads: 0, policy: "value", vram_budget_bytes: null, prefetch: true }, applied: null, gpu: null, policies: ["value"] }));
  setTransport(t);
  return { t, stored: () => stored, sets: () => t.calls.filter((c) => c.cmd === "panel_settings_set") };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  cleanup();
  vi.useRealTimers();
  setPalette("default");
  panelSettingsStore.set({ settings: DEFAULT_PANEL_SETTINGS, loaded: false, error: null });
});

describe("panel settings store", () => {
  it("loads the saved settings, defaults for sections an older document lacks", async () => {
    transport({ docked: true, window_steps: 32, sections: { timeline: false } as PanelSettings["sections"] });
    const s = new PanelSettingsStore();
    await s.load();
    const v = s.get().settings;
    expect(v.docked).toBe(true);
    expect(v.window_steps).toBe(32);
    expect(v.sections.timeline).toBe(false);
    expect(v.sections.cache_map).toBe(true);
    expect(s.get().loaded).toBe(true);
  });

  it("keeps the defaults and says why when loading fails", async () => {
    setTransport(new FakeTransport());
    const s = new PanelSettingsStore();
    await s.load();
    expect(s.get().settings).toEqual(DEFAULT_PANEL_SETTINGS);
    expect(s.get().error).toMatch(/panel_settings_get/);
  });

  it("shows a change at once and saves a burst of changes once, after the delay", async () => {
    const f = transport(null);
    const s = new PanelSettingsStore();
    await s.load();
    s.update({ heat_overlay: false });
    s.toggleSection("what_if");
    s.update({ window_steps: 16 });
    expect(s.get().settings.window_steps).toBe(16);
    expect(f.sets()).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(SAVE_DELAY_MS - 1);
    expect(f.sets()).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(f.sets()).toHaveLength(1);
    expect(f.stored()).toMatchObject({ heat_overlay: false, window_steps: 16, sections: { what_if: false, timeline: true } });
    // Nothing pending: no further save.
    await s.flush();
    expect(f.sets()).toHaveLength(1);
  });

  it("does not let a late load overwrite a change", async () => {
    const f = transport({ docked: false, palette: "default" });
    let release: () => void = () => {};
    const slow = new Promise<void>((r) => (release = r));
    f.t.on("panel_settings_get", async () => {
      await slow;
      return { ...DEFAULT_PANEL_SETTINGS, palette: "default" };
    });
    const s = new PanelSettingsStore();
    const loading = s.load();
    s.update({ palette: "colorblind" });
    release();
    await loading;
    expect(s.get().settings.palette).toBe("colorblind");
    await s.flush();
    expect(f.stored().palette).toBe("colorblind");
  });

  it("clamps the window to what the back end accepts and reports a failed save", async () => {
    expect(clampWindow(2)).toBe(MIN_WINDOW_STEPS);
    expect(clampWindow(10_000)).toBe(MAX_WINDOW_STEPS);
    expect(clampWindow(NaN)).toBe(DEFAULT_PANEL_SETTINGS.window_steps);
    const f = transport(null);
    f.t.on("panel_settings_set", () => {
      throw { kind: "invalid", message: "invalid window_steps: no" };
    });
    const s = new PanelSettingsStore();
    s.update({ window_steps: 1 });
    expect(s.get().settings.window_steps).toBe(MIN_WINDOW_STEPS);
    await s.flush();
    expect(s.get().error).toMatch(/not saved: invalid window_steps/);
  });
});

describe("panel view", () => {
  async function mountPanel() {
    const f = transport(null);
    render(<SchedulerPanel docked={false} />);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(0);
    });
    const ch = f.t.lastChannel<unknown>();
    act(() => {
      ch.onmessage({ kind: "model", model });
      for (let i = 0; i < 100; i++) schedulerStore.panel.history.push(step(i));
      schedulerStore.set((s) => ({ tick: s.tick + 1 }));
    });
    return f;
  }

  it("folds a section, remembers it, and unfolds it", async () => {
    const f = await mountPanel();
    expect(screen.getByTestId("sched-timeline")).toBeTruthy();
    fireEvent.click(screen.getByTestId("sched-fold-timeline"));
    expect(screen.queryByTestId("sched-timeline")).toBeNull();
    expect(screen.getByTestId("sched-section-timeline").getAttribute("data-open")).toBe("false");
    expect(screen.getByTestId("sched-fold-timeline").getAttribute("aria-expanded")).toBe("false");
    await act(async () => {
      await vi.advanceTimersByTimeAsync(SAVE_DELAY_MS);
    });
    expect(f.stored().sections.timeline).toBe(false);
    fireEvent.click(screen.getByTestId("sched-fold-timeline"));
    expect(screen.getByTestId("sched-timeline")).toBeTruthy();
  });

  it("charts the chosen window of steps and hides the heat legend without the overlay", async () => {
    const f = await mountPanel();
    expect(screen.getByTestId("sched-counters").getAttribute("data-window")).toBe("64");
    fireEvent.change(screen.getByTestId("sched-window"), { target: { value: "16" } });
    expect(screen.getByTestId("sched-counters").getAttribute("data-window")).toBe("16");
    expect(screen.getByText("use frequency")).toBeTruthy();
    fireEvent.click(screen.getByTestId("sched-heat"));
    expect(screen.queryByText("use frequency")).toBeNull();
    fireEvent.change(screen.getByTestId("sched-palette"), { target: { value: "colorblind" } });
    await act(async () => {
      await vi.advanceTimersByTimeAsync(SAVE_DELAY_MS);
    });
    expect(f.stored()).toMatchObject({ window_steps: 16, heat_overlay: false, palette: "colorblind" });
    expect(PALETTE.gpuHit).toEqual([86, 180, 233]);
  });

  it("the rail button docks the panel and the choice is saved", async () => {
    const f = transport(null);
    f.t.on("engine_status", () => ({ state: "idle" }));
    render(<App />);
    expect(screen.queryByTestId("sched-panel")).toBeNull();
    fireEvent.click(screen.getByTestId("toggle-scheduler"));
    expect(screen.getByTestId("sched-panel")).toBeTruthy();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(SAVE_DELAY_MS);
    });
    expect(f.stored().docked).toBe(true);
  });
});

describe("palettes", () => {
  it("the colour-blind palette changes the accents, keeps placements distinct, and switches back", () => {
    const before = [0, 1, 2].map((p) => [...placementRgb(p)]);
    setPalette("colorblind");
    const cb = [0, 1, 2].map((p) => placementRgb(p).join());
    expect(new Set(cb).size).toBe(3);
    expect(cb).not.toEqual(before.map((c) => c.join()));
    setPalette("default");
    expect([0, 1, 2].map((p) => [...placementRgb(p)])).toEqual(before);
  });
});

describe("HiDPI canvas", () => {
  function fakeCanvas() {
    const ctx = { setTransform: vi.fn() };
    const c = { width: 300, height: 150, style: {} as Record<string, string>, getContext: vi.fn(() => ctx) };
    return { c, ctx, el: c as unknown as HTMLCanvasElement };
  }

  it("sizes the backing store to CSS pixels × the pixel ratio and scales the context", () => {
    const { c, ctx, el } = fakeCanvas();
    expect(fitCanvas(el, 200, 50, 1.5)).toBe(ctx);
    expect([c.width, c.height, c.style.height]).toEqual([300, 75, "50px"]);
    expect(ctx.setTransform).toHaveBeenLastCalledWith(1.5, 0, 0, 1.5, 0, 0);
    fitCanvas(el, 200, 50, 3);
    expect([c.width, c.height]).toEqual([200 * MAX_DPR, 50 * MAX_DPR]);
    expect(ctx.setTransform).toHaveBeenLastCalledWith(MAX_DPR, 0, 0, MAX_DPR, 0, 0);
    fitCanvas(el, 120, 10, 0);
    expect([c.width, c.height]).toEqual([120, 10]);
  });

  it("leaves an already sized canvas alone (resizing clears it)", () => {
    const { c, el } = fakeCanvas();
    fitCanvas(el, 100, 40, 2);
    let writes = 0;
    const w = c.width;
    Object.defineProperty(c, "width", { get: () => w, set: () => void writes++ });
    fitCanvas(el, 100, 40, 2);
    expect(writes).toBe(0);
  });

  it("stretches timeline columns so the window fills the width, within bounds", () => {
    expect(timelineColumns(640, 64)).toEqual({ colW: 10, cols: 64 });
    expect(timelineColumns(300, 160)).toEqual({ colW: 3, cols: 100 });
    expect(timelineColumns(2000, 16)).toEqual({ colW: 14, cols: 16 });
  });
});
