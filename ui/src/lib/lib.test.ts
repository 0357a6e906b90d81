import { describe, expect, it } from "vitest";
import { formatBytes, formatDuration, formatRate } from "./format";
import { renderMarkdown } from "./markdown";
import { splitThinking } from "./thinking";

describe("renderMarkdown", () => {
  it("renders markdown and highlights known languages", () => {
    const html = renderMarkdown("**bold**\n\n```rust\nfn main() {}\n```");
    expect(html).toContain("<strong>bold</strong>");
    expect(html).toContain('class="hljs"');
    expect(html).toContain("hljs-keyword");
    expect(html).toContain('class="code-lang"');
  });

  it("strips scripts, event handlers and javascript: links", () => {
    const html = renderMarkdown(
      '<script>alert(1)</script><img src=x onerror="alert(2)"> [x](javascript:alert(3)) <a href="https://ok.example">ok</a>',
    );
    expect(html).not.toContain("<script");
    expect(html).not.toContain("onerror");
    expect(html).not.toMatch(/href="javascript/i);
    expect(html).not.toContain("<img");
    expect(renderMarkdown("[x](javascript:alert(3))")).not.toMatch(/href="javascript/i);
    expect(renderMarkdown("[x](https://a.example)")).toContain('href="https://a.example"');
    expect(html).toContain('href="https://ok.example"');
  });

  it("escapes code in unknown languages", () => {
    expect(renderMarkdown("```weird\n<b>x</b>\n```")).toContain("&lt;b&gt;x&lt;/b&gt;");
  });
});

describe("splitThinking", () => {
  it("separates a closed think block", () => {
    expect(splitThinking("<think>\nhmm\n</think>\n\nAnswer")).toEqual({ thinking: "hmm", thinkingOpen: false, answer: "Answer" });
  });
  it("reports an open block while streaming", () => {
    expect(splitThinking("<think>still going")).toEqual({ thinking: "still going", thinkingOpen: true, answer: "" });
  });
  it("leaves plain text alone", () => {
    expect(splitThinking("no <think> here")).toEqual({ thinking: null, thinkingOpen: false, answer: "no <think> here" });
  });
});

describe("format", () => {
  it("formats sizes, durations and rates", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(17_300_000_000)).toBe("17.3 GB");
    expect(formatDuration(42)).toBe("42 s");
    expect(formatDuration(3700)).toBe("1 h 2 min");
    expect(formatDuration(null)).toBe("–");
    expect(formatRate(31.25)).toBe("31.3 tok/s");
    expect(formatRate(0)).toBe("– tok/s");
  });
});
