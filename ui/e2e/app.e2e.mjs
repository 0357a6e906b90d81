// End-to-end test of the real app binary under Xvfb, driven through tauri-driver and
// WebKitWebDriver (WebdriverIO 9 in classic WebDriver mode). Run by scripts/app-tests.sh:
//   node --test ui/e2e/app.e2e.mjs
// Environment: HMOE_APP (binary), HMOE_HUB_SERVER (hub-test-server binary), E2E_ARTIFACTS (screenshots).
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { remote } from "webdriverio";

const APP = process.env.HMOE_APP;
const HUB = process.env.HMOE_HUB_SERVER;
const ART = process.env.E2E_ARTIFACTS ?? "target/e2e-artifacts";
const DRIVER_PORT = 4444;
/** Upper bounds for slow steps on a 2-core CI box (demo model generation + load). */
const READY_TIMEOUT = 300_000;
const STEP_TIMEOUT = 60_000;

mkdirSync(ART, { recursive: true });
const data = mkdtempSync(join(tmpdir(), "hmoe-e2e-"));
const procs = [];
let hubEndpoint = "";

function start(cmd, args, env = {}) {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit"] });
  procs.push(p);
  return p;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, timeout, what) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

async function session() {
  return remote({
    hostname: "127.0.0.1",
    port: DRIVER_PORT,
    logLevel: "warn",
    connectionRetryTimeout: 120_000,
    capabilities: { "tauri:options": { application: APP }, "wdio:enforceWebDriverClassic": true },
  });
}

async function shot(b, name) {
  await sleep(400);
  await b.saveScreenshot(join(ART, `${name}.png`));
}

async function go(b, route) {
  await (await b.$(`[data-testid="nav-${route}"]`)).click();
  await sleep(300);
}

before(async () => {
  assert.ok(APP && existsSync(APP), `HMOE_APP must point at the app binary (got ${APP})`);
  assert.ok(HUB && existsSync(HUB), `HMOE_HUB_SERVER must point at hub-test-server (got ${HUB})`);
  const portFile = join(data, "hub.port");
  // Cut the first transfer after 3 MB; 15 ms per 64 KiB chunk keeps it slow enough to pause.
  start(HUB, ["--port-file", portFile, "--cut-after", "3000000", "--slow-ms", "15"]);
  await waitFor(() => existsSync(portFile) && readFileSync(portFile, "utf8").trim(), 120_000, "hub test server");
  hubEndpoint = `http://127.0.0.1:${readFileSync(portFile, "utf8").trim()}`;
  start("tauri-driver", ["--port", String(DRIVER_PORT), "--native-driver", "/usr/bin/WebKitWebDriver"], {
    HMOE_STUDIO_DATA: join(data, "studio"),
    HF_ENDPOINT: hubEndpoint,
  });
  await sleep(1500);
});

after(async () => {
  for (const p of procs.reverse()) p.kill("SIGTERM");
});

test("chat, stop, download with interruption, restart keeps history", { timeout: 1_200_000 }, async () => {
  let b = await session();
  try {
    // The demo model is generated and loaded on first start.
    await waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
      READY_TIMEOUT, "demo model loaded");
    await go(b, "models");
    await waitFor(async () => (await b.$$('[data-testid="model"]')).length >= 1, STEP_TIMEOUT, "model list");
    await shot(b, "models");

    // Chat: a reply streams in and ends with stats.
    await go(b, "chat");
    await (await b.$('[data-testid="new-chat"]')).click();
    const composer = await b.$('[data-testid="composer"]');
    await composer.setValue("Hello from the end-to-end test");
    await (await b.$('[data-testid="send"]')).click();
    const lens = [];
    await waitFor(async () => {
      const m = await b.$$('[data-testid="message-assistant"]');
      if (m.length === 0) return false;
      lens.push((await m[0].getText()).length);
      return (await m[0].getAttribute("data-status")) === "complete";
    }, STEP_TIMEOUT * 3, "first reply");
    assert.ok(lens.some((l, i) => i > 0 && l > lens[0]), `reply text grew while streaming: ${lens.join(",")}`);
    await waitFor(async () => (await b.$$('[data-testid="stats"]')).length === 1, STEP_TIMEOUT, "stats under the reply");
    await shot(b, "chat");

    // Stop: ask for a long reply, stop it once text flows.
    await (await b.$('[data-testid="conv-settings"]')).click();
    await (await b.$(".side-sheet input[type=checkbox]")).click();
    const maxTok = await b.$$(".side-sheet input[type=number]");
    await maxTok[3].setValue("3000");
    await (await b.$(".side-sheet .btn.primary")).click();
    await composer.setValue("Tell me a very long story");
    await (await b.$('[data-testid="send"]')).click();
    await (await b.$('[data-testid="stop"]')).waitForExist({ timeout: STEP_TIMEOUT });
    await waitFor(async () => {
      const m = await b.$$('[data-testid="message-assistant"]');
      return m.length === 2 && (await m[1].getText()).length > 20;
    }, STEP_TIMEOUT, "second reply streaming");
    await (await b.$('[data-testid="stop"]')).click();
    await waitFor(async () => {
      const s = await b.$$('[data-testid="stats"]');
      return s.length === 2 && (await s[1].getText()).includes("stopped");
    }, STEP_TIMEOUT, "stopped reply with stats");
    await shot(b, "chat-stopped");

    // Download from the local hub: the first transfer is cut mid-file and resumes with Range.
    await go(b, "downloads");
    await (await b.$('[data-testid="repo-input"]')).setValue("hmoe-test/tiny-moe-GGUF");
    await (await b.$('[data-testid="browse"]')).click();
    await (await b.$('[data-testid="download-file"]')).waitForExist({ timeout: STEP_TIMEOUT });
    await (await b.$('[data-testid="download-file"]')).click();
    // Pause once it runs, then resume (the .part file is kept and continued).
    await (await b.$('[data-testid="pause"]')).waitForExist({ timeout: STEP_TIMEOUT });
    await sleep(1500);
    await (await b.$('[data-testid="pause"]')).click();
    await waitFor(async () => (await (await b.$('[data-testid="download"]')).getAttribute("data-status")) === "paused",
      STEP_TIMEOUT, "paused");
    await shot(b, "downloads-paused");
    await (await b.$('[data-testid="resume"]')).click();
    await waitFor(async () => (await (await b.$('[data-testid="download"]')).getAttribute("data-status")) === "complete",
      STEP_TIMEOUT * 4, "download complete");
    await shot(b, "downloads");
    await go(b, "models");
    await waitFor(async () => (await b.$$('[data-testid="model"][data-source="download"]')).length === 1,
      STEP_TIMEOUT, "downloaded model in the library");
    await shot(b, "models-after-download");
  } finally {
    await b.deleteSession();
  }

  // Restart: the history is still there.
  await sleep(1500);
  b = await session();
  try {
    await waitFor(async () => (await b.$$('[data-testid="conversation"]')).length === 1, READY_TIMEOUT, "conversation after restart");
    await (await b.$('[data-testid="conversation"] .conv-title')).click();
    await waitFor(async () => (await b.$$('[data-testid="message-assistant"]')).length === 2, STEP_TIMEOUT, "history after restart");
    await waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
      READY_TIMEOUT, "model reloaded");
    await shot(b, "chat-after-restart");
    await go(b, "settings");
    await shot(b, "settings");
  } finally {
    await b.deleteSession();
  }
});
