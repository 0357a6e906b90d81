// Benchmark (not a test): UI frame rate with the scheduler panel open while a reply
// streams, and generation speed with the panel open vs closed, in one run of the real
// app with the demo model. Run by scripts/bench-panel.sh (Xvfb + tauri-driver).
// Environment: HMOE_APP, E2E_ARTIFACTS, E2E_DRIVER_PORT (default 4444), BENCH_ROUNDS (default 3).
// Prints a Markdown table and writes $E2E_ARTIFACTS/bench-panel.json.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { connect, sleep, stopAll, tempDir, waitFor as waitEvery } from "./lib.mjs";

const waitFor = (fn, timeout, what) => waitEvery(fn, timeout, what, 100);

const APP = process.env.HMOE_APP;
const ART = process.env.E2E_ARTIFACTS ?? "target/e2e-artifacts";
const DRIVER_PORT = Number(process.env.E2E_DRIVER_PORT ?? 4444);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PROMPT = "Write a long story about a cache of experts.";


const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

async function main() {
  if (!APP || !existsSync(APP)) throw new Error(`HMOE_APP must point at the app binary (got ${APP})`);
  mkdirSync(ART, { recursive: true });
  // Removed at the end (also on failure: on process exit); results go to ART.
  const tmp = tempDir("hmoe-bench-panel-", ART);
  const data = tmp.dir;
  const driver = spawn("tauri-driver", ["--port", String(DRIVER_PORT), "--native-driver", "/usr/bin/WebKitWebDriver"], {
    env: { ...process.env, HMOE_STUDIO_DATA: join(data, "studio"), HMOE_STUDIO_KEYRING: "off" },
    stdio: ["ignore", "inherit", "inherit"], detached: true,
  });
  await sleep(1500);
  const b = await connect(DRIVER_PORT, APP);
  const runs = [];
  try {
    await waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
      300_000, "demo model");
    await (await b.$('[data-testid="nav-chat"]')).click();
    // A frame recorder: one rAF callback that stores timestamps (negligible next to painting).
    await b.execute(() => {
      const w = window;
      w.__benchFrames = [];
      const loop = (t) => {
        w.__benchFrames.push(t);
        requestAnimationFrame(loop);
      };
      requestAnimationFrame(loop);
    });
    let open = false;
    // Warm-up reply (first-use costs: caches, JIT) not counted.
    const modes = ["warmup", ...Array.from({ length: ROUNDS }, () => ["closed", "open"]).flat()];
    for (const mode of modes) {
      const want = mode === "open";
      if (want !== open) {
        await (await b.$('[data-testid="toggle-scheduler"]')).click();
        open = want;
        await sleep(1500);
      }
      await (await b.$('[data-testid="new-chat"]')).click();
      await sleep(300);
      await (await b.$('[data-testid="composer"]')).setValue(PROMPT);
      await b.execute(() => { window.__benchFrames.length = 0; window.__hmoeSchedCost = undefined; });
      const t0 = Date.now();
      await (await b.$('[data-testid="send"]')).click();
      await waitFor(async () => {
        const m = await b.$$('[data-testid="message-assistant"]');
        return m.length > 0 && (await m[m.length - 1].getAttribute("data-status")) === "complete";
      }, 600_000, "reply");
      const wall = (Date.now() - t0) / 1000;
      const frames = await b.execute(() => window.__benchFrames.slice());
      const cost = await b.execute(() => window.__hmoeSchedCost ?? null);
      const stats = await (await b.$$('[data-testid="stats"]')).pop().getText();
      const rate = Number((/([\d.]+)\s*tok\/s/.exec(stats) ?? [])[1]);
      const tokens = Number((/(\d+) tokens/.exec(stats) ?? [])[1]);
      const dts = frames.slice(1).map((t, i) => t - frames[i]);
      const span = frames.length > 1 ? (frames[frames.length - 1] - frames[0]) / 1000 : 0;
      const run = {
        mode,
        decode_tok_s: rate,
        tokens,
        wall_s: wall,
        fps: span > 0 ? (frames.length - 1) / span : 0,
        frame_p50_ms: quantile(dts, 0.5),
        frame_p95_ms: quantile(dts, 0.95),
        frame_max_ms: dts.length ? Math.max(...dts) : NaN,
        frames_over_33ms: dts.filter((d) => d > 33.4).length,
        frames: dts.length,
        panel_draw_ms_per_draw: cost && cost.draws ? cost.drawMs / cost.draws : 0,
        panel_draws: cost?.draws ?? 0,
        panel_msg_ms_per_msg: cost && cost.msgs ? cost.msgMs / cost.msgs : 0,
        panel_msgs: cost?.msgs ?? 0,
      };
      console.log(JSON.stringify(run));
      if (mode !== "warmup") runs.push(run);
    }
  } finally {
    await b.deleteSession().catch(() => {});
    await stopAll([driver]);
    tmp.remove();
  }
  const mean = (mode, k) => {
    const xs = runs.filter((r) => r.mode === mode).map((r) => r[k]);
    return xs.reduce((a, x) => a + x, 0) / Math.max(1, xs.length);
  };
  const summary = {
    date: new Date().toISOString(),
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model ?? "?",
    rounds: ROUNDS,
    closed_tok_s: mean("closed", "decode_tok_s"),
    open_tok_s: mean("open", "decode_tok_s"),
    ratio_open_vs_closed: mean("open", "decode_tok_s") / mean("closed", "decode_tok_s"),
    open_fps: mean("open", "fps"),
    closed_fps: mean("closed", "fps"),
    runs,
  };
  writeFileSync(join(ART, "bench-panel.json"), JSON.stringify(summary, null, 2));
  console.log("\n| mode | decode tok/s | tokens | UI fps | frame p50 ms | p95 ms | max ms | frames > 33 ms | panel draw ms (n) | panel msg ms (n) |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of runs) {
    console.log(`| panel ${r.mode} | ${r.decode_tok_s.toFixed(1)} | ${r.tokens} | ${r.fps.toFixed(1)} | ${r.frame_p50_ms.toFixed(1)} | ${r.frame_p95_ms.toFixed(1)} | ${r.frame_max_ms.toFixed(1)} | ${r.frames_over_33ms}/${r.frames} | ${r.panel_draw_ms_per_draw.toFixed(2)} (${r.panel_draws}) | ${r.panel_msg_ms_per_msg.toFixed(2)} (${r.panel_msgs}) |`);
  }
  console.log(`\nmean decode tok/s: closed ${summary.closed_tok_s.toFixed(1)}, open ${summary.open_tok_s.toFixed(1)} (open/closed ${summary.ratio_open_vs_closed.toFixed(3)}); UI fps open ${summary.open_fps.toFixed(1)}, closed ${summary.closed_fps.toFixed(1)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
