// End-to-end test of the real app binary under Xvfb, driven through tauri-driver and
// WebKitWebDriver (WebdriverIO 9 in classic WebDriver mode). Run by scripts/app-tests.sh:
//   node --test ui/e2e/app.e2e.mjs
// Environment: HMOE_APP (binary), HMOE_HUB_SERVER (hub-test-server binary), E2E_ARTIFACTS (screenshots),
// E2E_DRIVER_PORT (tauri-driver's port, default 4444).
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, sleep, stopAll, tempDir, waitFor } from "./lib.mjs";

const APP = process.env.HMOE_APP;
const HUB = process.env.HMOE_HUB_SERVER;
const ART = process.env.E2E_ARTIFACTS ?? "target/e2e-artifacts";
const DRIVER_PORT = Number(process.env.E2E_DRIVER_PORT ?? 4444);
/** Upper bounds for slow steps on a 2-core CI box (demo model generation + load). */
const READY_TIMEOUT = 300_000;
const STEP_TIMEOUT = 60_000;

mkdirSync(ART, { recursive: true });
// Removed when the file's tests end, pass or fail (screenshots go to ART, which is kept).
const tmp = tempDir("hmoe-e2e-", ART);
const data = tmp.dir;
// Native file dialogs cannot be driven over WebDriver: the app's test seam answers them
// with these paths (core/app/dialog.rs).
const importSrc = join(data, "import", "picked-tiny.gguf");
const exportDir = join(data, "exports");
const newModels = join(data, "models-moved");
mkdirSync(join(data, "import"), { recursive: true });
mkdirSync(exportDir, { recursive: true });
mkdirSync(newModels, { recursive: true });
const procs = [];
let hubEndpoint = "";

function start(cmd, args, env = {}) {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit"], detached: true });
  procs.push(p);
  return p;
}


const session = () => connect(DRIVER_PORT, APP);

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
    // CI has no keyring; make the fallback explicit so a developer's keyring is never touched.
    HMOE_STUDIO_KEYRING: "off",
    HMOE_STUDIO_DIALOG_OPEN_FILE: importSrc,
    HMOE_STUDIO_DIALOG_SAVE_DIR: exportDir,
  });
  await sleep(1500);
});

function demoFileName() {
  return readdirSync(join(newModels, "demo")).find((f) => f.endsWith(".gguf")) ?? "(none)";
}

after(async () => {
  await stopAll(procs);
  tmp.remove();
});

test("chat, stop, export, import, download resumed after a restart, settings", { timeout: 1_200_000 }, async () => {
  let b = await session();
  try {
    // The demo model is generated and loaded on first start.
    await waitFor(async () => (await (await b.$('[data-testid="engine-status"]')).getAttribute("data-state")) === "ready",
      READY_TIMEOUT, "demo model loaded");
    await go(b, "models");
    await waitFor(async () => (await b.$$('[data-testid="model"]')).length >= 1, STEP_TIMEOUT, "model list");
    await shot(b, "models");

    // Import a .gguf "picked" in the file dialog (a copy of the demo model).
    const demoDir = join(data, "studio", "models", "demo");
    const demoFile = readdirSync(demoDir).find((f) => f.endsWith(".gguf"));
    copyFileSync(join(demoDir, demoFile), importSrc);
    await (await b.$('[data-testid="import-model"]')).click();
    await waitFor(async () => (await b.$$('[data-testid="model"][data-source="imported"]')).length === 1,
      STEP_TIMEOUT, "imported model in the library");

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

    // Export as Markdown through the "save" dialog.
    await (await b.$('[data-testid="export-md"]')).click();
    const exported = join(exportDir, "Hello from the end-to-end test.md");
    await waitFor(() => existsSync(exported), STEP_TIMEOUT, "exported Markdown file");
    const md = readFileSync(exported, "utf8");
    assert.ok(md.startsWith("# Hello from the end-to-end test"), md.slice(0, 200));
    assert.ok(md.includes("## User\n\nHello from the end-to-end test") && md.includes("## Assistant"), md.slice(0, 400));
    await waitFor(async () => (await (await b.$('[data-testid="chat-notice"]')).getText()).includes(exported),
      STEP_TIMEOUT, "saved-to notice");

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
    // Search the Hub by words, then open the hit.
    await (await b.$('[data-testid="repo-input"]')).setValue("tiny-moe");
    await (await b.$('[data-testid="browse"]')).click();
    await (await b.$('[data-testid="search-hit"]')).waitForExist({ timeout: STEP_TIMEOUT });
    assert.equal((await b.$$('[data-testid="search-hit"]')).length, 1);
    await (await b.$('[data-testid="search-hit"]')).click();
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
    const bytes = async () => (await (await b.$('[data-testid="download-bytes"]')).getText());
    const before = await bytes();
    await waitFor(async () => (await (await b.$('[data-testid="download"]')).getAttribute("data-status")) === "running"
      && (await bytes()) !== before, STEP_TIMEOUT, "download running again");
    // Quit mid-transfer: the next start must continue it without a click.
    assert.equal(await (await b.$('[data-testid="download"]')).getAttribute("data-status"), "running");
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

    // The interrupted download resumed by itself and finished (no resume click here).
    await go(b, "downloads");
    await waitFor(async () => (await (await b.$('[data-testid="download"]')).getAttribute("data-status")) === "complete",
      STEP_TIMEOUT * 4, "download resumed at start and complete");
    await shot(b, "downloads");
    await go(b, "models");
    await waitFor(async () => (await b.$$('[data-testid="model"][data-source="download"]')).length === 1,
      STEP_TIMEOUT, "downloaded model in the library");
    const modelCount = (await b.$$('[data-testid="model"]')).length;
    await shot(b, "models-after-download");

    // Settings: the token goes to the secret store and comes back masked.
    await go(b, "settings");
    await waitFor(async () => (await (await b.$('[data-testid="secret-storage"]')).getText()).includes("readable only by you"),
      STEP_TIMEOUT, "secret storage note");
    await shot(b, "settings");
    await (await b.$('[data-testid="hf-token"]')).setValue("hf_e2eSecretToken0000WXYZ");
    await (await b.$('[data-testid="save-token"]')).click();
    await waitFor(async () => (await (await b.$('[data-testid="token-masked"]')).getText()).includes("hf_…WXYZ"),
      STEP_TIMEOUT, "masked token");
    assert.ok(!(await b.getPageSource()).includes("e2eSecretToken"), "the full token never reaches the page");
    const secrets = readFileSync(join(data, "studio", "secrets.json"), "utf8");
    assert.ok(secrets.includes("hf_e2eSecretToken0000WXYZ"), "token in the 0600 secrets file");

    // The local API server serves the loaded model; a plain HTTP client lists it.
    await (await b.$('[data-testid="server-port"]')).setValue("0");
    await (await b.$('[data-testid="server-start"]')).click();
    const status = await b.$('[data-testid="server-status"]');
    await status.waitForExist({ timeout: READY_TIMEOUT });
    const apiUrl = (await status.getText()).match(/http:\/\/127\.0\.0\.1:\d+\/v1/)?.[0];
    assert.ok(apiUrl, await status.getText());
    const listed = await (await fetch(`${apiUrl}/models`)).json();
    assert.equal(listed.data.length, 1, JSON.stringify(listed));
    await (await b.$('[data-testid="server-stop"]')).click();
    await (await b.$('[data-testid="server-start"]')).waitForExist({ timeout: STEP_TIMEOUT });
    await assert.rejects(fetch(`${apiUrl}/models`), "stopped server still answers");

    // Move the models folder: check it, move, and find every model again.
    await (await b.$('[data-testid="folder-input"]')).setValue(newModels);
    await (await b.$('[data-testid="folder-check"]')).click();
    await (await b.$('[data-testid="folder-plan"]')).waitForExist({ timeout: STEP_TIMEOUT });
    await (await b.$('[data-testid="folder-plan"]')).scrollIntoView();
    await shot(b, "settings-models-folder");
    await (await b.$('[data-testid="folder-move"]')).click();
    await waitFor(async () => (await (await b.$('[data-testid="folder-result"]')).getText()).startsWith("Moved"),
      STEP_TIMEOUT * 2, "models moved");
    assert.ok(existsSync(join(newModels, "demo", demoFileName())), "demo model moved");
    await go(b, "models");
    await waitFor(async () => (await b.$$('[data-testid="model"]')).length === modelCount, STEP_TIMEOUT, "same models after the move");
  } finally {
    await b.deleteSession();
  }
});
