// An in-memory Transport for tests: records calls, lets tests answer commands and push
// channel messages and events.
import type { StreamChannel, Transport } from "../services/ipc";

export class FakeChannel<T> implements StreamChannel<T> {
  readonly handle = { fake: true };
  onmessage: (msg: T) => void = () => {};
}

type Handler = (args: Record<string, unknown>) => unknown;

export class FakeTransport implements Transport {
  calls: { cmd: string; args: Record<string, unknown> }[] = [];
  handlers = new Map<string, Handler>();
  channels: FakeChannel<unknown>[] = [];
  listeners = new Map<string, ((p: unknown) => void)[]>();

  on(cmd: string, h: Handler): this {
    this.handlers.set(cmd, h);
    return this;
  }

  async invoke<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    this.calls.push({ cmd, args });
    const h = this.handlers.get(cmd);
    if (!h) throw { kind: "test", message: `no fake for ${cmd}` };
    return (await h(args)) as T;
  }

  channel<T>(): StreamChannel<T> {
    const c = new FakeChannel<T>();
    this.channels.push(c as FakeChannel<unknown>);
    return c;
  }

  async listen<T>(event: string, cb: (payload: T) => void): Promise<() => void> {
    const l = this.listeners.get(event) ?? [];
    l.push(cb as (p: unknown) => void);
    this.listeners.set(event, l);
    return () => {};
  }

  emit(event: string, payload: unknown): void {
    for (const l of this.listeners.get(event) ?? []) l(payload);
  }

  lastChannel<T>(): FakeChannel<T> {
    return this.channels[this.channels.length - 1] as FakeChannel<T>;
  }
}
