// End-to-end test of the live scheduler panel with the real app binary (Xvfb, tauri-driver,
// WebKitWebDriver, WebdriverIO 9 classic). Run by scripts/app-tests.sh after app.e2e.mjs:
//   node --test --test-concurrency=1 ui/e2e/app.e2e.mjs ui/e2e/panel.e2e.mjs
// Environment: HMOE_APP (binary), E2E_ARTIFACTS (screenshots), E2E_DRIVER_PORT (default 4444).
// Generates with the demo model on a machine without a GPU: every expert runs on the CPU,
// the cache stays empty, and the panel has to say so.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, sleep, stopAll, tempDir, waitFor as waitEvery } from "./lib.mjs";

const waitFor = (fn, timeout, what) => waitEvery(fn, timeout, what, 150);

const APP = process.env.HMOE_APP;
const ART = process.env.E2E_ARTIFACTS ?? "target/e2e-artifacts";
const DRIVER_PORT = Number(process.env.E2E_DRIVER_PORT ?? 4444);
/** Upper bounds for slow steps on a 2-core CI box (demo model generation + load). */
const READY_TIMEOUT = 300_000;
const STEP_TIMEOUT = 60_000;

mkdirSync(ART, { recursive: true });
// Removed when the file's tests end, pass or fail (screenshots go to ART, which is kept).
const tmp = tempDir("hmoe-panel-e2e-", ART);
const data = tmp.dir;
const exportDir = join(data, "exports");
mkdirSync(exportDir, { recursive: true });
const procs = [];


async function shot(b, name) {
  await b.saveScreenshot(join(ART, `${name}.png`));
}

/** The panel's observable state, read in the page in one round trip. */
function panelState(b) {
  return b.execute(() => {
    const q = (s) => document.querySelector(s);
    const grid = q('[data-testid="sched-grid"]');
    const msgs = document.querySelectorAll('[data-testid="message-assistant"]');
    const last = msgs[msgs.length - 1];
    const num = (s) => Number(q(s)?.getAttribute("data-value") ?? "NaN");
    let hash = 0;
    if (grid && grid.width > 0) {
      // A cheap fingerprint of the drawn pixels (the canvas is same-origin).
      const url = grid.toDataURL();
      for (let i = 0; i < url.length; i += 7) hash = (hash * 31 + url.charCodeAt(i)) | 0;
    }
    return {
      steps: Number(q('[data-testid="sched-counters"]')?.getAttribute("data-steps") ?? "0"),
      tokS: num('[data-testid="sched-counter-tok_s"]'),
      hit: num('[data-testid="sched-counter-hit_rate"]'),
      vram: num('[data-testid="sched-counter-vram"]'),
      gridVersion: Number(grid?.getAttribute("data-version") ?? "-1"),
      glowing: Number(grid?.getAttribute("data-glowing") ?? "0"),
      gridHash: hash,
      timelineSteps: Number(q('[data-testid="sched-timeline"]')?.getAttribute("data-steps") ?? "0"),
      status: last?.getAttribute("data-status") ?? "none",
      replies: msgs.length,
    };
  });
}

/** Sends `text` from the chat screen; samples the panel until the reply completes. */
async function sendAndWatch(b, text, onSample) {
  const before = (await b.$$('[data-testid="message-assistant"]')).length;
  const composer = await b.$('[data-testid="composer"]');
  await composer.setValue(text);
  await (await b.$('[data-testid="send"]')).click();
  const samples = [];
  await waitFor(async () => {
    const s = await panelState(b);
    samples.push(s);
    if (onSample) await onSample(s, samples);
    return s.replies > before && s.status === "complete";
  }, STEP_TIMEOUT * 3, "reply complete");
  return samples;
}

before(async () => {
  assert.ok(APP && existsSync(APP), `HMOE_APP must point at the app binary (got ${APP})`);
  const p = spawn("tauri-driver", ["--port", String(DRIVER_PORT), "--native-driver", "/usr/bin/WebKitWebDriver"], {
    env: {
      ...process.env,
      HMOE_STUDIO_DATA: join(data, "studio"),
      HMOE_STUDIO_KEYRING: "off",
      // The save dialog's test seam (core/app/dialog.rs): exports land here.
      HMOE_STUDIO_DIALOG_SAVE_DIR: exportDir,
    },
    stdio: ["ignore", "inherit", "inherit"], detached: true,
  });
  procs.push(p);
  await sleep(1500);
});

after(async () => {
  await stopAll(procs);
  tmp.remove();
});

test("scheduler panel: live map and counters while streaming, no-GPU notice, controls, what-if, exports", { timeout: 1_200_000 }, async () => {
  const b = await connect(DRIVER_PORT, APP);
  try {
    await waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
      READY_TIMEOUT, "demo model loaded");

    // Open the docked panel next to the chat.
    await (await b.$('[data-testid="nav-chat"]')).click();
    await (await b.$('[data-testid="toggle-scheduler"]')).click();
    await waitFor(async () => /layers/.test(await (await b.$('[data-testid="sched-model"]')).getText()), STEP_TIMEOUT, "panel knows the model");
    // No GPU here: the panel says so, and the device pill reads CPU only.
    assert.match(await (await b.$('[data-testid="sched-nogpu"]')).getText(), /No GPU/);
    assert.equal(await (await b.$('[data-testid="sched-device"]')).getText(), "CPU only");

    await (await b.$('[data-testid="new-chat"]')).click();
    let shotTaken = false;
    const samples = await sendAndWatch(b, "Tell me a long story about experts and caches.", async (s) => {
      if (!shotTaken && s.status === "streaming" && s.steps > 20) {
        shotTaken = true;
        await shot(b, "panel-docked-streaming");
      }
    });
    const streaming = samples.filter((s) => s.status === "streaming");
    assert.ok(streaming.length >= 2, `sampled while streaming: ${JSON.stringify(samples.map((s) => s.status))}`);
    const steps = samples.map((s) => s.steps);
    const distinct = (xs) => new Set(xs).size;
    assert.ok(distinct(streaming.map((s) => s.steps)) >= 2, `the step counter moved while streaming: ${steps.join(",")}`);
    assert.ok(distinct(streaming.map((s) => s.gridHash)) >= 2 || distinct(streaming.map((s) => s.gridVersion)) >= 2,
      "the cache map was redrawn with new selections while streaming");
    assert.ok(streaming.some((s) => s.glowing > 0), "the current token's experts light up on the map");
    const end = await panelState(b);
    assert.ok(end.steps > 0 && end.tokS > 0, `counters after the reply: ${JSON.stringify(end)}`);
    assert.equal(end.hit, 0, "no GPU: no cache hits");
    assert.equal(end.vram, 0, "no GPU: the cache is empty");
    assert.ok(end.timelineSteps > 0, "the timeline shows recent tokens");
    if (!shotTaken) await shot(b, "panel-docked-streaming");

    // Hover a cell: the tooltip shows the expert's statistics.
    const grid = await b.$('[data-testid="sched-grid"]');
    await grid.moveTo({ xOffset: 5, yOffset: 5 });
    const tip = await waitFor(async () => {
      const t = await b.$('[data-testid="sched-tip"]');
      return (await t.isExisting()) ? t : null;
    }, STEP_TIMEOUT, "tooltip");
    const tipText = await tip.getText();
    assert.match(tipText, /Layer \d+ · expert \d+/);
    assert.match(tipText, /uses/);
    assert.match(tipText, /not in VRAM/);
    await shot(b, "panel-hover");

    // What if: replay this conversation under every policy and cache size.
    await (await b.$('[data-testid="sched-whatif-run"]')).click();
    await waitFor(async () => (await b.$('[data-testid="sched-whatif-plot"]')).isExisting(), STEP_TIMEOUT * 2, "what-if plot");
    const summary = await (await b.$('[data-testid="sched-whatif-summary"]')).getText();
    assert.match(summary, /steps/);
    const polylines = await b.execute(() => document.querySelectorAll('[data-testid="sched-whatif-plot"] polyline').length);
    assert.ok(polylines >= 2 * 8, `a line per policy in both charts: ${polylines}`);

    // Export the trace and the plot (the save dialog's test seam picks the folder).
    await (await b.$('[data-testid="sched-export-trace"]')).click();
    const tracePath = join(exportDir, "routing-trace.jsonl");
    // Saved atomically (temporary file, fsync, rename; core/app/atomic.rs): once the file
    // exists it is complete, so it is read as soon as it appears.
    await waitFor(() => existsSync(tracePath), STEP_TIMEOUT, "trace file");
    assert.ok(readFileSync(tracePath, "utf8").endsWith("\n"), "the trace file is complete when it appears");
    const header = JSON.parse(readFileSync(tracePath, "utf8").split("\n")[0]);
    assert.equal(header.format, "hmoe-trace");
    await (await b.$('[data-testid="sched-export-plot"]')).click();
    const plotPath = join(exportDir, "what-if.svg");
    await waitFor(() => existsSync(plotPath), STEP_TIMEOUT, "plot file");
    assert.ok(readFileSync(plotPath, "utf8").trimEnd().endsWith("</svg>"), "the plot file is complete when it appears");
    assert.match(readFileSync(plotPath, "utf8"), /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);

    // Controls: switch to LRU; it is in force from the next generation on.
    const policy = await b.$('[data-testid="sched-policy"]');
    await policy.selectByAttribute("value", "lru");
    await (await b.$('[data-testid="sched-apply"]')).click();
    await waitFor(async () => /In force: lru/.test(await (await b.$('[data-testid="sched-in-force"]')).getText()),
      STEP_TIMEOUT, "LRU in force (the engine is idle, so it applies at once)");

    // Full-size view while a second reply streams: the screenshot for the front page.
    await (await b.$('[data-testid="toggle-scheduler"]')).click();
    const composer = await b.$('[data-testid="composer"]');
    await composer.setValue("And now another one, about prefetching.");
    await (await b.$('[data-testid="send"]')).click();
    const startSteps = (await panelState(b)).steps;
    await b.execute(() => { location.hash = "#/scheduler"; });
    const live = async () => (await (await b.$('[data-testid="sched-live"]')).getText()).includes("live");
    await waitFor(live, STEP_TIMEOUT, "second reply streaming into the full-size panel");
    await waitFor(async () => (await panelState(b)).steps > startSteps + 30, STEP_TIMEOUT, "panel counting steps");
    await (await b.$('[data-testid="sched-whatif-run"]')).click();
    await sleep(300);
    await shot(b, "panel-full-streaming");
    await waitFor(async () => !(await live()), STEP_TIMEOUT * 3, "second reply done (panel idle)");
    await (await b.$('[data-testid="sched-whatif-run"]')).click();
    await waitFor(async () => !(await (await b.$('[data-testid="sched-whatif-run"]')).getAttribute("disabled")), STEP_TIMEOUT, "replay done");
    await sleep(600);
    await shot(b, "panel-full-whatif");
    // The new policy was in force for the second reply.
    assert.match(await (await b.$('[data-testid="sched-in-force"]')).getText(), /In force: lru/);
  } finally {
    await b.deleteSession();
  }
});

test("view settings survive a restart; the cache map at Qwen3-30B-A3B's shape (synthetic stream)", { timeout: 900_000 }, async () => {
  const ready = (b) => waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
    READY_TIMEOUT, "model loaded");
  const fullPanel = async (b) => {
    await b.execute(() => { location.hash = "#/scheduler"; });
    await waitFor(async () => /layers/.test(await (await b.$('[data-testid="sched-model"]')).getText()), STEP_TIMEOUT, "panel knows the model");
  };
  let b = await connect(DRIVER_PORT, APP);
  try {
    await ready(b);
    await fullPanel(b);
    // Chart window 32, Controls and What if folded, panel docked: saved 300 ms later.
    await (await b.$('[data-testid="sched-window"]')).selectByAttribute("value", "32");
    await (await b.$('[data-testid="sched-fold-controls"]')).click();
    await (await b.$('[data-testid="sched-fold-what_if"]')).click();
    await (await b.$('[data-testid="toggle-scheduler"]')).click();
    await sleep(1500);
  } finally {
    await b.deleteSession();
  }

  // A new app process reads them back.
  b = await connect(DRIVER_PORT, APP);
  try {
    await ready(b);
    await waitFor(async () => (await b.$('[data-testid="sched-panel"]')).isExisting(), STEP_TIMEOUT, "docked panel back after the restart");
    assert.match(await (await b.$('[data-testid="toggle-scheduler"]')).getAttribute("class"), /active/);
    await fullPanel(b);
    assert.equal(await (await b.$('[data-testid="sched-window"]')).getValue(), "32");
    assert.equal(await (await b.$('[data-testid="sched-section-controls"]')).getAttribute("data-open"), "false");
    assert.equal(await (await b.$('[data-testid="sched-section-what_if"]')).getAttribute("data-open"), "false");
    assert.equal(await (await b.$('[data-testid="sched-section-cache_map"]')).getAttribute("data-open"), "true");

    // Qwen3-30B-A3B's 48 × 128 map cannot run here (17 GB, no GPU): the panel plays a
    // synthetic stream of that shape through its normal message path (lib/synthSched.ts).
    await b.execute(() => window.__hmoeSchedDemo.start(300, 20));
    await waitFor(async () => /48 layers × 128 experts/.test(await (await b.$('[data-testid="sched-model"]')).getText()),
      STEP_TIMEOUT, "synthetic 48 × 128 model");
    const grid = await b.$('[data-testid="sched-grid"]');
    assert.equal(await grid.getAttribute("aria-label"), "Cache map: 48 layers by 128 experts");
    const size = await b.execute(() => {
      const c = document.querySelector('[data-testid="sched-grid"]');
      return { w: c.clientWidth, h: c.clientHeight };
    });
    // One row per layer, cells about square: height ≈ 48 × (width / 128), at least 3 px a row.
    assert.ok(size.h >= 48 * 3 && Math.abs(size.h - 48 * Math.max(3, size.w / 128)) <= 2, `grid size ${JSON.stringify(size)}`);
    await waitFor(async () => Number(await grid.getAttribute("data-glowing")) > 0, STEP_TIMEOUT, "selections lit on the 48 × 128 map");
    assert.match(await (await b.$('[data-testid="sched-device"]')).getText(), /synthetic/);
    await sleep(1200);
    await shot(b, "panel-48x128-synthetic");
    await b.execute(() => window.__hmoeSchedDemo.stop());
  } finally {
    await b.deleteSession();
  }
});
