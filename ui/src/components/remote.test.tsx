// Remote endpoints per conversation, the masked token and the models folder flow.
import { fireEvent, render, waitFor } from "@testing-library/preact";
import { beforeEach, describe, expect, it } from "vitest";
import { setTransport } from "../services/ipc";
import type { AppSettings, Conversation, FolderCheck, RemoteEndpoint, SettingsView } from "../services/types";
import { chatStore } from "../stores/chat";
import { engineStore } from "../stores/engine";
import { SettingsStore, settingsStore } from "../stores/settings";
import { FakeTransport } from "../test/fakeTransport";
import { ChatScreen } from "./ChatScreen";
import { ChatSettingsPanel } from "./ChatSettingsPanel";
import { SettingsScreen } from "./SettingsScreen";

const settings: AppSettings = {
  threads: 0, vram_budget_gib: null, policy: "value", prefetch: true,
  default_sampling: { temperature: 0.7, top_k: 20, top_p: 0.8, min_p: 0, repetition_penalty: 1, repetition_window: 64,
    seed: 0, max_tokens: 512, stop: [] },
  enable_thinking: false, hf_endpoint: "", last_model: null, resume_downloads_on_start: true, models_folder: null,
  default_backend: { kind: "local" },
};
const view = (over: Partial<SettingsView> = {}): SettingsView => ({
  settings, data_folder: "/data", models_folder: "/data/models", policies: ["value"], hf_token_masked: null,
  secret_storage: { kind: "file", note: "No system keyring is available: stored in /data/secrets.json (readable only by you)." },
  ...over,
});
const lab: RemoteEndpoint = { id: 3, name: "lab", url: "http://gpu-box:10002/v1", model: "qwen3-30b", api_key_masked: "sk-…cdef" };
const conv = (backend: Conversation["backend"]): Conversation => ({
  id: 1, title: "Remote chat", system_prompt: "", settings: null, backend, created_at: 0, updated_at: 0,
});
const check: FolderCheck = {
  path: "/mnt/big/models", ok: true, problems: [], can_move: true, move_problem: null, models_bytes: 3 << 20,
  models_files: 2, free_bytes: 500 << 30, same_filesystem: false,
};

let t: FakeTransport;
beforeEach(() => {
  t = new FakeTransport();
  t.on("settings_get", () => view())
    .on("remote_endpoints_list", () => [lab])
    .on("conversations_list", () => [conv({ kind: "remote", endpoint_id: 3 })])
    .on("messages_list", () => [])
    .on("local_server_status", () => ({ running: false, url: null, model: null, api_key_required: false }));
  setTransport(t);
  settingsStore.set({ view: null, endpoints: [], folderCheck: null, folderPath: "", folderDone: null, error: null });
});

describe("SettingsStore", () => {
  it("sends the token once and keeps only the masked form", async () => {
    t.on("settings_set_hf_token", () => view({ hf_token_masked: "hf_…WXYZ" }));
    const s = new SettingsStore();
    await s.load();
    expect(await s.setToken("  hf_secretsecretWXYZ ")).toBe(true);
    expect(t.calls.find((c) => c.cmd === "settings_set_hf_token")?.args).toEqual({ token: "hf_secretsecretWXYZ" });
    expect(JSON.stringify(s.get())).not.toContain("secretsecret");
    expect(s.get().view?.hf_token_masked).toBe("hf_…WXYZ");
    await s.setToken("");
    expect(t.calls.filter((c) => c.cmd === "settings_set_hf_token").pop()?.args).toEqual({ token: null });
  });

  it("checks a folder, then moves to the checked path", async () => {
    t.on("models_folder_check", () => check)
      .on("models_folder_change", () => ({ models_folder: check.path, moved_files: 2, moved_bytes: 3 << 20, left_in: null }));
    const s = new SettingsStore();
    s.setFolderPath("/mnt/big/models/");
    await s.checkFolder();
    expect(s.get().folderCheck?.can_move).toBe(true);
    expect(await s.changeFolder(true)).toBe(true);
    expect(t.calls.find((c) => c.cmd === "models_folder_change")?.args).toEqual({ path: "/mnt/big/models", moveModels: true });
    expect(s.get().folderDone?.moved_files).toBe(2);
    expect(s.get().folderCheck).toBeNull();
  });

  it("shows why a change was refused", async () => {
    t.on("models_folder_change", () => {
      throw { kind: "state", message: "downloads are running: pause them (or let them finish) first" };
    });
    const s = new SettingsStore();
    s.setFolderPath("/x");
    expect(await s.changeFolder(false)).toBe(false);
    expect(s.get().error).toMatch(/downloads are running/);
    expect(s.get().folderBusy).toBe(false);
  });
});

describe("SettingsScreen", () => {
  it("walks the folder flow and says where secrets are kept", async () => {
    t.on("models_folder_check", () => check)
      .on("models_folder_change", (a) => ({ models_folder: check.path, moved_files: 0, moved_bytes: 0,
        left_in: a.moveModels ? null : "/data/models" }));
    const { getByTestId, findByTestId } = render(<SettingsScreen />);
    expect((await findByTestId("secret-storage")).textContent).toContain("readable only by you");
    fireEvent.input(getByTestId("folder-input"), { target: { value: "/mnt/big/models" } });
    fireEvent.click(getByTestId("folder-check"));
    expect((await findByTestId("folder-plan")).textContent).toContain("another disk");
    fireEvent.click(getByTestId("folder-leave"));
    expect((await findByTestId("folder-result")).textContent).toContain("Models left in /data/models");
  });
});

describe("remote conversations", () => {
  it("the conversation settings pick an endpoint", async () => {
    t.on("conversation_update_settings", () => conv(null)).on("conversation_set_backend", () => conv({ kind: "remote", endpoint_id: 3 }));
    await settingsStore.load();
    const { getByTestId } = render(<ChatSettingsPanel conv={conv(null)} onClose={() => {}} />);
    const select = getByTestId("conv-backend") as HTMLSelectElement;
    expect([...select.options].map((o) => o.textContent)).toEqual([
      "App default (This computer)", "This computer", "lab (qwen3-30b)",
    ]);
    fireEvent.change(select, { target: { value: "remote:3" } });
    fireEvent.click(getByTestId("conv-settings-save"));
    await waitFor(() => expect(t.calls.some((c) => c.cmd === "conversation_set_backend")).toBe(true));
    expect(t.calls.find((c) => c.cmd === "conversation_set_backend")?.args).toEqual({
      id: 1, backend: { kind: "remote", endpoint_id: 3 },
    });
  });

  it("a remote conversation can send without a local model", async () => {
    engineStore.set({ status: { state: "idle" } });
    await settingsStore.load();
    await chatStore.refresh("");
    await chatStore.select(1);
    const { getByTestId, findByTestId } = render(<ChatScreen />);
    expect((await findByTestId("conv-backend-chip")).textContent).toBe("lab (qwen3-30b)");
    fireEvent.input(getByTestId("composer"), { target: { value: "hello" } });
    await waitFor(() => expect((getByTestId("send") as HTMLButtonElement).disabled).toBe(false));
  });

  it("a local conversation still needs a model", async () => {
    t.on("conversations_list", () => [conv({ kind: "local" })]);
    engineStore.set({ status: { state: "idle" } });
    await settingsStore.load();
    await chatStore.refresh("");
    await chatStore.select(1);
    const { getByTestId, queryByTestId } = render(<ChatScreen />);
    fireEvent.input(getByTestId("composer"), { target: { value: "hello" } });
    await waitFor(() => expect((getByTestId("composer") as HTMLTextAreaElement).value).toBe("hello"));
    expect((getByTestId("send") as HTMLButtonElement).disabled).toBe(true);
    expect(queryByTestId("conv-backend-chip")).toBeNull();
  });
});

describe("new chats", () => {
  it("a chat made with New chat is named after its first message", async () => {
    const fresh = { ...conv(null), title: "New chat" };
    t.on("conversations_list", () => [fresh])
      .on("conversation_rename", (a) => ({ ...fresh, title: String(a.title) }))
      .on("chat_send", () => ({ user_message_id: 10, assistant_message_id: 11 }));
    await chatStore.refresh("");
    await chatStore.select(1);
    await chatStore.send("Plan a trip to Lisbon\nwith details");
    expect(t.calls.find((c) => c.cmd === "conversation_rename")?.args).toEqual({ id: 1, title: "Plan a trip to Lisbon" });
  });
});

describe("Hub search", () => {
  it("words search the Hub, org/name lists files, a hit lists its files", async () => {
    const { DownloadsStore } = await import("../stores/downloads");
    t.on("hub_search", () => [{ repo: "unsloth/Qwen3-30B-A3B-GGUF", downloads: 1000, likes: 5 }])
      .on("hub_list_files", (a) => ({ repo: a.repo, revision: "main", commit: null, files: [] }));
    const s = new DownloadsStore();
    await s.submit("qwen3 30b");
    expect(t.calls.find((c) => c.cmd === "hub_search")?.args).toEqual({ query: "qwen3 30b" });
    expect(s.get().hits?.[0].repo).toBe("unsloth/Qwen3-30B-A3B-GGUF");
    await s.submit("unsloth/Qwen3-30B-A3B-GGUF");
    expect(t.calls.find((c) => c.cmd === "hub_list_files")?.args).toEqual({ repo: "unsloth/Qwen3-30B-A3B-GGUF", revision: null });
    expect(s.get().hits).toBeNull();
    await s.submit("../../etc");
    expect(s.get().error).toMatch(/org\/name/);
    expect(t.calls.filter((c) => c.cmd === "hub_search")).toHaveLength(1);
  });
});

describe("local server", () => {
  it("starts on the chosen port with a trimmed key and stops", async () => {
    const running = { running: true, url: "http://127.0.0.1:10002/v1", model: "tiny", api_key_required: true };
    t.on("local_server_start", () => running).on("local_server_stop", () => ({ ...running, running: false, url: null, model: null }));
    const { getByTestId, findByTestId } = render(<SettingsScreen />);
    fireEvent.input(await findByTestId("server-port"), { target: { value: "10002" } });
    fireEvent.click(getByTestId("server-start"));
    expect((await findByTestId("server-status")).textContent).toContain("http://127.0.0.1:10002/v1");
    expect(t.calls.find((c) => c.cmd === "local_server_start")?.args).toEqual({ port: 10002, apiKey: null });
    fireEvent.click(getByTestId("server-stop"));
    await findByTestId("server-start");
  });

  it("says why it could not start", async () => {
    t.on("local_server_start", () => {
      throw { kind: "state", message: "load a model first: the server serves the model loaded here" };
    });
    const s = new SettingsStore();
    expect(await s.startServer(10002, "  k ")).toBe(false);
    expect(t.calls.find((c) => c.cmd === "local_server_start")?.args).toEqual({ port: 10002, apiKey: "k" });
    expect(s.get().error).toMatch(/load a model first/);
    expect(s.get().serverBusy).toBe(false);
  });
});
