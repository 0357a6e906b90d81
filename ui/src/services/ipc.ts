// The only module that talks to Tauri. Everything else goes through `api` (typed calls),
// so tests swap the transport for a fake and components never call invoke directly.
import { Channel, invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";

export interface StreamChannel<T> {
  /** What is passed to the command as its channel argument. */
  readonly handle: unknown;
  onmessage: (msg: T) => void;
}

export interface Transport {
  invoke<T>(cmd: string, args?: Record<string, unknown>): Promise<T>;
  channel<T>(): StreamChannel<T>;
  listen<T>(event: string, cb: (payload: T) => void): Promise<() => void>;
}

class TauriChannel<T> implements StreamChannel<T> {
  readonly handle: Channel<T>;
  onmessage: (msg: T) => void = () => {};
  constructor() {
    this.handle = new Channel<T>();
    this.handle.onmessage = (m) => this.onmessage(m);
  }
}

export const tauriTransport: Transport = {
  invoke: (cmd, args) => invoke(cmd, args),
  channel: <T>() => new TauriChannel<T>(),
  listen: async (event, cb) => listen(event, (e) => cb(e.payload as never)),
};

let current: Transport = tauriTransport;

/** Replaces the transport (tests). */
export function setTransport(t: Transport): void {
  current = t;
}

export function transport(): Transport {
  return current;
}
