// Helpers shared by the end-to-end tests and the panel benchmark (real app under
// tauri-driver + WebKitWebDriver, WebdriverIO 9 in classic WebDriver mode).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join, relative, resolve } from "node:path";
import { remote } from "webdriverio";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every `pollMs` until it returns a truthy value (returned) or `timeout` ms pass. */
export async function waitFor(fn, timeout, what, pollMs = 250) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(pollMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** A WebDriver session that starts the app binary `app` through tauri-driver on `port`. */
export function connect(port, app) {
  return remote({
    hostname: "127.0.0.1",
    port,
    logLevel: "warn",
    connectionRetryTimeout: 120_000,
    capabilities: { "tauri:options": { application: app }, "wdio:enforceWebDriverClassic": true },
  });
}

/**
 * A fresh folder under the OS temp folder for one test file's data (app data, exports,
 * models: ~300 MB). `remove()` deletes it; it is also removed when the process exits,
 * whatever the outcome, in case an `after` hook never ran. Screenshots and other artefacts
 * must not go here: they belong in E2E_ARTIFACTS (kept; refused below if inside).
 */
export function tempDir(prefix, keep = artifactsDir()) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (keep && isInside(resolve(keep), dir)) throw new Error(`artefacts folder ${keep} is inside the temp folder ${dir}`);
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    try {
      // Retries: the app may still be closing files when the driver has just gone.
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 300 });
    } catch (e) {
      // A cleanup race must not fail a run that passed; say what was left behind.
      console.warn(`could not remove the temp folder ${dir}: ${e}`);
    }
  };
  process.once("exit", remove);
  exitOnSignals();
  return { dir, remove };
}

let signalsHooked = false;
/** Ctrl-C or the runner's SIGTERM end the process through `exit`, so the folders go too. */
function exitOnSignals() {
  if (signalsHooked) return;
  signalsHooked = true;
  process.once("SIGINT", () => process.exit(130));
  process.once("SIGTERM", () => process.exit(143));
}

/** The artefacts folder (screenshots, benchmark JSON), kept after the run. */
export function artifactsDir() {
  return resolve(process.env.E2E_ARTIFACTS ?? "target/e2e-artifacts");
}

const isInside = (child, parent) => {
  const r = relative(parent, child);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
};

/** Signals the process group of `p` (spawned with `detached: true`, so tauri-driver,
 * WebKitWebDriver and the app they start share it), or `p` alone if that fails. */
function signalGroup(p, sig) {
  try {
    process.kill(-p.pid, sig);
  } catch {
    try {
      p.kill(sig);
    } catch {
      /* already gone */
    }
  }
}

/** Sends SIGTERM to each process group (last started first) and waits up to `graceMs` for
 * its leader to exit, then SIGKILLs the whole group: files under a temp folder can only be
 * removed once nobody writes them, and an app left running by the driver would keep the
 * test runner's output pipe open and hang it (seen once in CI: the runner waited forever). */
export async function stopAll(procs, graceMs = 5000) {
  for (const p of [...procs].reverse()) {
    if (p.exitCode == null && p.signalCode == null) {
      const exited = new Promise((r) => p.once("exit", r));
      signalGroup(p, "SIGTERM");
      const t = setTimeout(() => signalGroup(p, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    }
    // The leader is gone; whatever it started in its group goes too.
    signalGroup(p, "SIGKILL");
  }
  procs.length = 0;
}
