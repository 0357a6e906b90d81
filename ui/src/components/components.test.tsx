import { fireEvent, render } from "@testing-library/preact";
import { describe, expect, it, vi } from "vitest";
import type { Message } from "../services/types";
import { parseRoute } from "../app";
import { MessageItem } from "./MessageItem";
import { StatusBar } from "./StatusBar";

const base: Message = {
  id: 2, conversation_id: 1, seq: 2, role: "assistant", content: "", status: "complete", error: null, stats: null, created_at: 0,
};

describe("MessageItem", () => {
  it("folds thinking and shows tokens/s and TTFT", () => {
    const m: Message = {
      ...base,
      content: "<think>plan</think>\n\n**Answer**",
      stats: { model: "demo", prompt_tokens: 3, completion_tokens: 42, time_to_first_token_s: 0.123, prefill_tok_s: 50,
        decode_tok_s: 31.25, finish_reason: "stop" },
    };
    const { container, getByTestId } = render(
      <MessageItem message={m} streaming={false} canRegenerate busy={false} onRegenerate={() => {}} onEditResend={() => {}} />,
    );
    const details = container.querySelector("details.thinking") as HTMLDetailsElement;
    expect(details.open).toBe(false);
    expect(container.querySelector(".md strong")?.textContent).toBe("Answer");
    expect(getByTestId("stats").textContent).toContain("31.3 tok/s");
    expect(getByTestId("stats").textContent).toContain("TTFT 0.12 s");
  });

  it("marks interrupted replies and never renders raw HTML", () => {
    const m: Message = { ...base, status: "interrupted", content: "<img src=x onerror=alert(1)>partial" };
    const { container } = render(
      <MessageItem message={m} streaming={false} canRegenerate={false} busy={false} onRegenerate={() => {}} onEditResend={() => {}} />,
    );
    expect(container.textContent).toContain("Interrupted");
    expect(container.querySelector("img")).toBeNull();
  });

  it("edits and resends a user message", () => {
    const onEdit = vi.fn();
    const m: Message = { ...base, role: "user", content: "old" };
    const { getByTitle, getByText, container } = render(
      <MessageItem message={m} streaming={false} canRegenerate={false} busy={false} onRegenerate={() => {}} onEditResend={onEdit} />,
    );
    fireEvent.click(getByTitle("Edit and resend"));
    const ta = container.querySelector("textarea") as HTMLTextAreaElement;
    fireEvent.input(ta, { target: { value: "new text" } });
    fireEvent.click(getByText("Save & resend"));
    expect(onEdit).toHaveBeenCalledWith("new text");
  });
});

describe("StatusBar and routes", () => {
  it("shows load progress", () => {
    const { getByTestId } = render(
      <StatusBar engine={{ status: { state: "loading", path: "/m", progress: null }, progress: { stage: "weights", done: 1, total: 4 }, error: null }} />,
    );
    expect(getByTestId("engine-status").textContent).toContain("Preparing weights 25%");
  });

  it("parses routes with a default", () => {
    expect(parseRoute("#/models")).toBe("models");
    expect(parseRoute("#/scheduler")).toBe("scheduler");
    expect(parseRoute("#/nope")).toBe("chat");
    expect(parseRoute("")).toBe("chat");
  });
});
