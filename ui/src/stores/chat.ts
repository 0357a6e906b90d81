// Chat state: conversation list, the open conversation's messages, the streaming reply.
import { api } from "../services/api";
import type {
  BackendChoice,
  ChatStreamEvent,
  Conversation,
  ConversationSettings,
  Message,
  SendResult,
} from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface ChatState {
  conversations: Conversation[];
  query: string;
  activeId: number | null;
  messages: Message[];
  /** Id of the reply streaming now in the open conversation. */
  streamingId: number | null;
  error: string | null;
}

/** Title of a conversation before its first message. */
const NEW_CHAT = "New chat";

const initial: ChatState = { conversations: [], query: "", activeId: null, messages: [], streamingId: null, error: null };

/** Paints streamed text at most once per frame, however fast tokens come. */
const nextFrame = (f: () => void) =>
  typeof requestAnimationFrame === "function" ? requestAnimationFrame(() => f()) : setTimeout(f, 16);

export class ChatStore extends Store<ChatState> {
  /** Full text streamed so far per reply (deltas can arrive before the command returns). */
  private streamed = new Map<number, string>();
  private flushQueued = false;

  constructor() {
    super(initial);
  }

  async refresh(query = this.get().query): Promise<void> {
    try {
      const conversations = await api.listConversations(query);
      this.set({ conversations, query });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async select(id: number | null): Promise<void> {
    this.set({ activeId: id, messages: [], streamingId: null });
    if (id == null) return;
    await this.reloadMessages(id);
  }

  private async reloadMessages(id: number): Promise<void> {
    try {
      const msgs = await api.listMessages(id);
      if (this.get().activeId !== id) return;
      const merged = msgs.map((m) => {
        const s = this.streamed.get(m.id);
        return m.status === "streaming" && s !== undefined && s.length > m.content.length ? { ...m, content: s } : m;
      });
      const streaming = merged.find((m) => m.status === "streaming");
      this.set({ messages: merged, streamingId: streaming ? streaming.id : null });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async create(): Promise<Conversation | null> {
    try {
      const c = await api.createConversation(NEW_CHAT);
      await this.refresh("");
      await this.select(c.id);
      return c;
    } catch (e) {
      this.set({ error: errorMessage(e) });
      return null;
    }
  }

  async rename(id: number, title: string): Promise<void> {
    await this.guard(async () => {
      await api.renameConversation(id, title);
      await this.refresh();
    });
  }

  async remove(id: number): Promise<void> {
    await this.guard(async () => {
      await api.deleteConversation(id);
      if (this.get().activeId === id) await this.select(null);
      await this.refresh();
    });
  }

  async updateSettings(id: number, systemPrompt: string, settings: ConversationSettings | null): Promise<void> {
    await this.guard(async () => {
      await api.updateConversationSettings(id, systemPrompt, settings);
      await this.refresh();
    });
  }

  /** Who answers the conversation (null = the app's default). */
  async setBackend(id: number, backend: BackendChoice | null): Promise<void> {
    await this.guard(async () => {
      await api.setConversationBackend(id, backend);
      await this.refresh();
    });
  }

  private onStream = (ev: ChatStreamEvent) => {
    if (ev.type === "delta") {
      this.streamed.set(ev.message_id, (this.streamed.get(ev.message_id) ?? "") + ev.text);
      this.queueFlush();
    } else {
      this.streamed.delete(ev.message_id);
      if (this.get().streamingId === ev.message_id) this.set({ streamingId: null });
      if (ev.error) this.set({ error: ev.error });
      const id = this.get().activeId;
      if (id != null) void this.reloadMessages(id);
      void this.refresh();
    }
  };

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    nextFrame(() => {
      this.flushQueued = false;
      this.set((s) => ({
        messages: s.messages.map((m) => {
          const t = this.streamed.get(m.id);
          return t !== undefined ? { ...m, content: t } : m;
        }),
      }));
    });
  }

  private async startStream(run: () => Promise<SendResult>, conversationId: number): Promise<void> {
    this.set({ error: null });
    try {
      const r = await run();
      this.streamed.set(r.assistant_message_id, this.streamed.get(r.assistant_message_id) ?? "");
      if (this.get().activeId === conversationId) {
        await this.reloadMessages(conversationId);
        this.set({ streamingId: r.assistant_message_id });
      }
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async send(text: string): Promise<void> {
    let id = this.get().activeId;
    const title = text.trim().split("\n")[0].slice(0, 60);
    if (id == null) {
      const c = await this.create();
      if (!c) return;
      id = c.id;
      if (title) await this.rename(id, title);
    } else {
      // A chat made with "New chat" is named after its first message too.
      const conv = this.get().conversations.find((c) => c.id === id);
      if (conv && conv.title === NEW_CHAT && this.get().messages.length === 0 && title) await this.rename(id, title);
    }
    const cid = id;
    await this.startStream(() => api.send(cid, text, this.onStream), cid);
  }

  async regenerate(): Promise<void> {
    const id = this.get().activeId;
    if (id == null) return;
    await this.startStream(() => api.regenerate(id, this.onStream), id);
  }

  async editResend(messageId: number, text: string): Promise<void> {
    const id = this.get().activeId;
    if (id == null) return;
    await this.startStream(() => api.editResend(messageId, text, this.onStream), id);
  }

  async stop(): Promise<void> {
    const sid = this.get().streamingId;
    if (sid != null) await this.guard(() => api.stop(sid).then(() => undefined));
  }

  clearError(): void {
    this.set({ error: null });
  }

  private async guard(f: () => Promise<void>): Promise<void> {
    try {
      await f();
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }
}

export const chatStore = new ChatStore();
