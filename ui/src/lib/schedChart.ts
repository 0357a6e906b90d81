// What-if report → chart series (pure; the SVG component only draws them).
import type { WhatIfReport } from "../services/schedTypes";

export interface ChartSeries {
  policy: string;
  color: string;
  values: number[];
  current: boolean;
  dashed: boolean;
}

/** One colour per policy (stable across charts and exports). */
export const POLICY_COLORS: Record<string, string> = {
  "cpu-only": "#8b93a7",
  static: "#ff6b6b",
  "static-hot": "#ff9f5a",
  lru: "#4aa8ff",
  lfu: "#5ce1e6",
  mrs: "#f472b6",
  value: "#a78bfa",
  "value+pf": "#3ecf8e",
};

export function policyColor(p: string): string {
  return POLICY_COLORS[p] ?? "#e6e8ef";
}

export function whatIfChart(r: WhatIfReport): { sizes: string[]; hit: ChartSeries[]; tok: ChartSeries[]; tokMax: number } {
  const bySize = (policy: string, key: "hit_rate" | "tok_s") =>
    r.sizes.map((size) => r.rows.find((row) => row.size === size && row.policy === policy)?.[key] ?? 0);
  const mk = (key: "hit_rate" | "tok_s"): ChartSeries[] =>
    r.policies.map((p) => ({
      policy: p,
      color: policyColor(p),
      values: bySize(p, key),
      current: p === r.current_policy,
      dashed: p === "value+pf" || p === "cpu-only",
    }));
  const tok = mk("tok_s");
  const top = Math.max(1e-9, ...tok.flatMap((s) => s.values));
  // Round the axis up to 1, 2 or 5 × a power of ten.
  const p10 = Math.pow(10, Math.floor(Math.log10(top)));
  const tokMax = [1, 2, 5, 10].map((f) => f * p10).find((v) => v >= top) ?? top;
  return { sizes: r.sizes, hit: mk("hit_rate"), tok, tokMax };
}
