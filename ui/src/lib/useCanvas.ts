// A canvas that follows its wrapper's width and draws sharp on HiDPI screens: the hook
// measures the wrapper (ResizeObserver), `fitCanvas` sizes the backing store to CSS
// pixels × devicePixelRatio and scales the context so drawing code works in CSS pixels.
import { useEffect, useRef, useState } from "preact/hooks";

/** Largest device-pixel ratio used: beyond 2 the backing store grows (4× the pixels at 4)
 * for no visible gain on a map of flat cells. */
export const MAX_DPR = 2;

export function useCanvas() {
  const wrap = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const measure = () => setWidth(Math.floor(el.clientWidth));
    measure();
    const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(measure) : null;
    ro?.observe(el);
    return () => ro?.disconnect();
  }, []);
  return { wrap, canvas, width };
}

/** Sizes `c` for `width` × `height` CSS pixels at the screen's pixel ratio (capped at
 * MAX_DPR; only when the size changed, since resizing clears the canvas and costs a
 * reallocation) and returns its context scaled to CSS pixels, or null without one. */
export function fitCanvas(
  c: HTMLCanvasElement,
  width: number,
  height: number,
  ratio: number = typeof window !== "undefined" ? window.devicePixelRatio : 1,
): CanvasRenderingContext2D | null {
  const dpr = Math.min(MAX_DPR, ratio || 1);
  const w = Math.round(width * dpr);
  const h = Math.round(height * dpr);
  if (c.width !== w || c.height !== h) {
    c.width = w;
    c.height = h;
    c.style.height = `${height}px`;
  }
  const ctx = c.getContext("2d");
  ctx?.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}
