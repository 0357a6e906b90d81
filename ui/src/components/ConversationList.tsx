import { useState } from "preact/hooks";
import type { Conversation } from "../services/types";
import { chatStore } from "../stores/chat";
import { Icon } from "./Icon";

interface Props {
  conversations: Conversation[];
  activeId: number | null;
  query: string;
}

export function ConversationList({ conversations, activeId, query }: Props) {
  const [renaming, setRenaming] = useState<number | null>(null);
  const [title, setTitle] = useState("");

  return (
    <aside class="conv-list">
      <div class="conv-head">
        <button class="btn primary wide" onClick={() => void chatStore.create()} data-testid="new-chat">
          <Icon name="plus" size={16} /> New chat
        </button>
        <label class="search">
          <Icon name="search" size={15} />
          <input type="search" placeholder="Search chats" value={query} data-testid="search"
            onInput={(e) => void chatStore.refresh((e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <ul class="conv-items">
        {conversations.length === 0 && <li class="empty">{query ? "No chat matches." : "No chats yet."}</li>}
        {conversations.map((c) => (
          <li key={c.id} class={c.id === activeId ? "active" : ""} data-testid="conversation">
            {renaming === c.id ? (
              <form class="rename" onSubmit={(e) => { e.preventDefault(); setRenaming(null); void chatStore.rename(c.id, title); }}>
                <input value={title} autoFocus onInput={(e) => setTitle((e.target as HTMLInputElement).value)}
                  onBlur={() => setRenaming(null)} />
              </form>
            ) : (
              <button class="conv-title" onClick={() => void chatStore.select(c.id)} title={c.title}>{c.title}</button>
            )}
            <span class="conv-actions">
              <button class="icon-btn" title="Rename" onClick={() => { setTitle(c.title); setRenaming(c.id); }}>
                <Icon name="edit" size={14} />
              </button>
              <button class="icon-btn danger" title="Delete" data-testid="delete-conversation"
                onClick={() => { if (confirm(`Delete “${c.title}”?`)) void chatStore.remove(c.id); }}>
                <Icon name="trash" size={14} />
              </button>
            </span>
          </li>
        ))}
      </ul>
    </aside>
  );
}
