// A minimal observable store: state + subscribe, and a Preact hook to read it.
import { useEffect, useState } from "preact/hooks";

export class Store<S> {
  private listeners = new Set<(s: S) => void>();
  constructor(private state: S) {}

  get(): S {
    return this.state;
  }

  set(patch: Partial<S> | ((s: S) => Partial<S>)): void {
    const p = typeof patch === "function" ? patch(this.state) : patch;
    this.state = { ...this.state, ...p };
    for (const l of this.listeners) l(this.state);
  }

  subscribe(l: (s: S) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

export function useStore<S>(store: Store<S>): S {
  const [s, setS] = useState(store.get());
  useEffect(() => {
    setS(store.get());
    return store.subscribe(setS);
  }, [store]);
  return s;
}
