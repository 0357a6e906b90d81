// Helpers shared by the end-to-end tests and the panel benchmark (real app under
// tauri-driver + WebKitWebDriver, WebdriverIO 9 in classic WebDriver mode).
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
