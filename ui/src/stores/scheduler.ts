// Scheduler panel state. The live picture (grid, timeline, counters) lives in a mutable
// `PanelModel` that canvases read on every animation frame; the store itself changes at
// most a few times a second (counters text, options, what-if), so Preact re-renders
// stay rare however fast tokens stream.
import { PanelModel, panelCost } from "../lib/schedModel";
import { schedApi } from "../services/schedApi";
import type { RuntimeOptions, SchedMessage, SchedModel, SchedOptionsView, WhatIfReport } from "../services/schedTypes";
import { errorMessage } from "../services/types";
import { chatStore } from "./chat";
import { Store } from "./store";

/** How often the store (counters text, sparklines) re-renders while frames arrive (ms). */
export const UI_TICK_MS = 200;

export interface SchedulerState {
  subscribed: boolean;
  model: SchedModel | null;
  options: SchedOptionsView | null;
  /** Bumped every UI tick while data arrives. */
  tick: number;
  whatIf: WhatIfReport | null;
  whatIfBusy: boolean;
  /** Which steps the last replay covered. */
  whatIfScope: string;
  notice: string | null;
  error: string | null;
}

const initial: SchedulerState = {
  subscribed: false,
  model: null,
  options: null,
  tick: 0,
  whatIf: null,
  whatIfBusy: false,
  whatIfScope: "",
  notice: null,
  error: null,
};

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

export class SchedulerStore extends Store<SchedulerState> {
  readonly panel = new PanelModel();
  private subId: number | null = null;
  private opening: Promise<void> | null = null;
  private users = 0;
  private tickQueued = false;
  /** First step seen while each conversation was streaming (its replay starts there). */
  readonly conversationStart = new Map<number, number>();

  constructor() {
    super(initial);
  }

  /** A panel mounted: subscribe (once for all mounted panels). */
  async open(): Promise<void> {
    this.users++;
    if (this.subId != null || this.opening) return this.opening ?? undefined;
    this.opening = (async () => {
      try {
        const id = await schedApi.subscribe((m) => this.onMessage(m));
        if (this.users === 0) {
          void schedApi.unsubscribe(id);
          return;
        }
        this.subId = id;
        this.set({ subscribed: true, error: null });
      } catch (e) {
        this.set({ error: errorMessage(e) });
      } finally {
        this.opening = null;
      }
    })();
    return this.opening;
  }

  /** A panel unmounted: unsubscribe when none is left. */
  close(): void {
    this.users = Math.max(0, this.users - 1);
    if (this.users > 0 || this.subId == null) return;
    const id = this.subId;
    this.subId = null;
    this.set({ subscribed: false });
    void schedApi.unsubscribe(id).catch(() => {});
  }

  onMessage(m: SchedMessage): void {
    const t0 = now();
    this.panel.apply(m, t0);
    if (m.kind === "model") {
      this.set({ model: m.model, whatIf: null, options: null });
      if (m.model) void this.refreshOptions();
    } else if (m.kind === "frame") {
      const c = chatStore.get();
      if (c.streamingId != null && c.activeId != null && !this.conversationStart.has(c.activeId)) {
        this.conversationStart.set(c.activeId, m.last_step - m.steps + 1);
      }
    } else if (m.kind === "snapshot") {
      const o = this.get().options;
      if (o && JSON.stringify(o.applied) !== JSON.stringify(m.applied)) this.set({ options: { ...o, applied: m.applied } });
    }
    this.queueTick();
    const cost = panelCost();
    cost.msgMs += now() - t0;
    cost.msgs++;
  }

  private queueTick(): void {
    if (this.tickQueued) return;
    this.tickQueued = true;
    setTimeout(() => {
      this.tickQueued = false;
      this.set((s) => ({ tick: s.tick + 1 }));
    }, UI_TICK_MS);
  }

  async refreshOptions(): Promise<void> {
    try {
      this.set({ options: await schedApi.options() });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async setOptions(o: RuntimeOptions): Promise<void> {
    try {
      const options = await schedApi.setOptions(o);
      this.set({ options, error: null, notice: "Saved: applies from the next generation, no reload." });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  /** The replay's first step: the open conversation's first reply seen by the panel. */
  replayFrom(): number | null {
    const id = chatStore.get().activeId;
    return id != null ? this.conversationStart.get(id) ?? null : null;
  }

  async runWhatIf(): Promise<void> {
    const from = this.replayFrom();
    this.set({ whatIfBusy: true, error: null });
    try {
      const whatIf = await schedApi.whatIf(from);
      const scope = from != null ? `this conversation (from step ${from})` : "the replies kept since the model was loaded (the newest 4096+ steps)";
      this.set({ whatIf, whatIfScope: scope });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    } finally {
      this.set({ whatIfBusy: false });
    }
  }

  async exportTrace(): Promise<void> {
    try {
      const p = await schedApi.exportTrace(this.replayFrom());
      if (p) this.set({ notice: `Trace saved to ${p}` });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async exportPlot(svg: string): Promise<void> {
    try {
      const p = await schedApi.exportPlot(svg);
      if (p) this.set({ notice: `Plot saved to ${p}` });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }
}

export const schedulerStore = new SchedulerStore();

/** Docs/test seam: plays a synthetic stream at Qwen3-30B-A3B's shape (48 × 128, which this
 * machine cannot run; lib/synthSched.ts) into the panel, through the same message path as
 * the back end's. Used by the e2e run for the docs screenshot: `start(warm, perSecond)`
 * replays `warm` steps at once, then streams `perSecond` steps a second until `stop()`.
 * Loaded on demand, so it costs nothing unless called. */
export const synthDemo = {
  timer: null as ReturnType<typeof setInterval> | null,
  async start(warm = 300, perSecond = 20, store: SchedulerStore = schedulerStore): Promise<number> {
    this.stop();
    const { SynthScheduler, QWEN3_30B_A3B } = await import("../lib/synthSched");
    const s = new SynthScheduler(QWEN3_30B_A3B);
    for (const m of s.warmUp(warm)) store.onMessage(m);
    let k = 0;
    this.timer = setInterval(() => {
      store.onMessage(s.next());
      if (++k % 5 === 0) store.onMessage(s.snapshot());
    }, 1000 / perSecond);
    return s.step;
  },
  stop(): void {
    if (this.timer != null) clearInterval(this.timer);
    this.timer = null;
  },
};
(globalThis as unknown as { __hmoeSchedDemo?: typeof synthDemo }).__hmoeSchedDemo = synthDemo;
