// Splits Qwen3 output into its <think>…</think> part and the answer.
export interface SplitReply {
  thinking: string | null;
  /** True while the closing tag has not arrived yet. */
  thinkingOpen: boolean;
  answer: string;
}

export function splitThinking(text: string): SplitReply {
  const open = text.indexOf("<think>");
  if (open === -1 || text.slice(0, open).trim() !== "") return { thinking: null, thinkingOpen: false, answer: text };
  const rest = text.slice(open + "<think>".length);
  const close = rest.indexOf("</think>");
  if (close === -1) return { thinking: rest.trim(), thinkingOpen: true, answer: "" };
  return { thinking: rest.slice(0, close).trim(), thinkingOpen: false, answer: rest.slice(close + "</think>".length).trimStart() };
}
