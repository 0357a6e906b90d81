import { beforeEach, describe, expect, it } from "vitest";
import { setTransport } from "../services/ipc";
import type { ChatStreamEvent, Conversation, Message } from "../services/types";
import { FakeTransport } from "../test/fakeTransport";
import { ChatStore } from "./chat";
import { DownloadsStore, REPO_RE } from "./downloads";
import { EngineStore } from "./engine";

const conv: Conversation = { id: 1, title: "T", system_prompt: "", settings: null, backend: null, created_at: 0, updated_at: 0 };
const msg = (id: number, role: Message["role"], content: string, status: Message["status"] = "complete"): Message => ({
  id, conversation_id: 1, seq: id, role, content, status, error: null, stats: null, created_at: 0,
});
const tick = () => new Promise((r) => setTimeout(r, 30));

describe("ChatStore", () => {
  let t: FakeTransport;
  let db: Message[];
  beforeEach(() => {
    t = new FakeTransport();
    db = [];
    t.on("conversations_list", () => [conv])
      .on("messages_list", () => db)
      .on("chat_send", (a) => {
        db = [msg(10, "user", String(a.text)), msg(11, "assistant", "", "streaming")];
        return { user_message_id: 10, assistant_message_id: 11 };
      })
      .on("chat_stop", () => true);
    setTransport(t);
  });

  it("streams deltas into the reply and reloads when done", async () => {
    const s = new ChatStore();
    await s.refresh();
    await s.select(1);
    await s.send("hello");
    expect(s.get().streamingId).toBe(11);
    const ch = t.lastChannel<ChatStreamEvent>();
    ch.onmessage({ type: "delta", message_id: 11, text: "Hel" });
    ch.onmessage({ type: "delta", message_id: 11, text: "lo!" });
    await tick();
    expect(s.get().messages.find((m) => m.id === 11)?.content).toBe("Hello!");
    db = [msg(10, "user", "hello"), { ...msg(11, "assistant", "Hello!"), stats: null }];
    ch.onmessage({ type: "done", message_id: 11, status: "complete", stats: null, error: null });
    await tick();
    expect(s.get().streamingId).toBeNull();
    expect(s.get().messages.map((m) => m.status)).toEqual(["complete", "complete"]);
  });

  it("keeps deltas that arrive before the command returns", async () => {
    t.on("chat_send", (a) => {
      t.lastChannel<ChatStreamEvent>().onmessage({ type: "delta", message_id: 11, text: "early " });
      db = [msg(10, "user", String(a.text)), msg(11, "assistant", "", "streaming")];
      return { user_message_id: 10, assistant_message_id: 11 };
    });
    const s = new ChatStore();
    await s.select(1);
    await s.send("x");
    await tick();
    expect(s.get().messages.find((m) => m.id === 11)?.content).toBe("early ");
  });

  it("stop asks the back end to stop the streaming reply", async () => {
    const s = new ChatStore();
    await s.select(1);
    await s.send("x");
    await s.stop();
    expect(t.calls.filter((c) => c.cmd === "chat_stop").map((c) => c.args)).toEqual([{ messageId: 11 }]);
  });

  it("shows command errors", async () => {
    t.on("chat_send", () => {
      throw { kind: "state", message: "no model is loaded" };
    });
    const s = new ChatStore();
    await s.select(1);
    await s.send("x");
    expect(s.get().error).toBe("no model is loaded");
  });

  it("search passes the query and a new chat gets its title from the first line", async () => {
    t.on("conversation_create", () => conv).on("conversation_rename", () => conv);
    const s = new ChatStore();
    await s.refresh("rust");
    expect(t.calls.find((c) => c.cmd === "conversations_list")?.args).toEqual({ query: "rust" });
    await s.send("How do lifetimes work?\nMore text");
    expect(t.calls.find((c) => c.cmd === "conversation_rename")?.args).toEqual({ id: 1, title: "How do lifetimes work?" });
  });
});

describe("DownloadsStore", () => {
  it("validates repo ids before asking the back end", async () => {
    const t = new FakeTransport();
    setTransport(t);
    const s = new DownloadsStore();
    await s.browse("../etc");
    expect(s.get().error).toMatch(/org\/name/);
    expect(t.calls).toEqual([]);
    expect(REPO_RE.test("unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF")).toBe(true);
    expect(REPO_RE.test("a/b/c")).toBe(false);
  });

  it("merges progress events into the list", () => {
    setTransport(new FakeTransport());
    const s = new DownloadsStore();
    const d = { id: 1, repo: "a/b", revision: "main", file: "x.gguf", size: 100, bytes_done: 10, status: "running" as const,
      error: null, speed_bps: 5, eta_s: 18, seq: 1 };
    s.upsert(d);
    s.upsert({ ...d, bytes_done: 50, seq: 2 });
    expect(s.get().downloads).toHaveLength(1);
    expect(s.get().downloads[0].bytes_done).toBe(50);
    // An older view (delivered late) does not undo a newer one.
    s.upsert({ ...d, bytes_done: 20, seq: 1 });
    expect(s.get().downloads[0].bytes_done).toBe(50);
  });

  it("a list read before a pause does not overwrite the paused event (regression)", async () => {
    const t = new FakeTransport();
    const base = { id: 7, repo: "a/b", revision: "main", file: "x.gguf", size: 100, bytes_done: 40,
      error: null, speed_bps: 0, eta_s: null };
    // The list was read (seq 5) before the task wrote "paused" (seq 6), but arrives later.
    t.on("download_pause", () => {
      s.upsert({ ...base, status: "paused", seq: 6 });
      return null;
    }).on("downloads_list", () => [{ ...base, status: "running", seq: 5 }]);
    setTransport(t);
    const s = new DownloadsStore();
    s.upsert({ ...base, status: "running", seq: 4 });
    await s.act("pause", 7);
    expect(s.get().downloads[0].status).toBe("paused");
  });
});

describe("EngineStore", () => {
  it("follows load progress over the channel", async () => {
    const t = new FakeTransport();
    t.on("engine_load", () => undefined).on("engine_status", () => ({ state: "idle" }));
    setTransport(t);
    const s = new EngineStore();
    await s.load("/m.gguf");
    const ch = t.lastChannel<unknown>();
    ch.onmessage({ type: "progress", progress: { stage: "weights", done: 1, total: 4 } });
    expect(s.get().progress?.stage).toBe("weights");
    ch.onmessage({ type: "ready", model: { path: "/m.gguf", name: "m", architecture: "qwen3moe", quant: "q8_0", context_length: 4096 } });
    expect(s.get().status.state).toBe("ready");
  });
});
