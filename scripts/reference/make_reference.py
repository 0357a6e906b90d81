#!/usr/bin/env python3
"""Reference fixtures for the engine's correctness tests (see engine/tests/fixtures/README.md).

    make_reference.py --out DIR                      # F32 GGUF models + transformers logits/greedy
    make_reference.py --out DIR --gguf-only          # just the F32 GGUF files (no torch needed)
    make_reference.py --out DIR --dequant-from Q.gguf [--tag NAME] [--prompts-like small-q]
                                                     # transformers on the dequantised weights

Needs numpy, torch and transformers (numpy only with --gguf-only). CPU, float32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ggml_dequant  # noqa: E402
import gguf_min  # noqa: E402
import numpy_ref  # noqa: E402
import qwen3moe_gguf as q3  # noqa: E402

# transformers (float32) vs the float64 numpy forward: float32 rounding through a few layers
# gives ~1e-6 relative error; 1e-4 leaves room, while any layout mistake (swapped gate/up,
# wrong expert axis, permuted heads) gives errors of order 1.
NUMPY_CHECK_REL_L2 = 1e-4


def rel_l2_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relative L2 error of each row (position) of a against b."""
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)


def write_f32_model(spec: q3.Spec, out: str) -> tuple[str, dict[str, np.ndarray], dict]:
    """Write the seeded F32 GGUF, read it back with our reader and check the round trip."""
    weights = q3.random_weights(spec)
    path = os.path.join(out, f"{spec.name}.gguf")
    gguf_min.write_gguf_f32(path, q3.gguf_metadata(spec), weights)
    meta, tensors = gguf_min.read_gguf(path)
    g = q3.gguf_arrays(tensors, ggml_dequant.dequantize)
    for k, v in weights.items():
        if not np.array_equal(g[k], v):
            raise RuntimeError(f"{path}: tensor {k} did not survive the GGUF round trip")
    return path, g, meta


def reference_outputs(g: dict[str, np.ndarray], spec: q3.Spec, tag: str, prompts: list[list[int]],
                      out: str, extra: dict, log: list[str]) -> dict:
    """Logits + greedy fixtures for one set of weights; returns the meta dict it also writes."""
    import hf_reference as hf

    model = hf.build_model(spec)
    layout, state_log = hf.describe_and_detect(model, spec)
    log.append(f"## {tag}")
    log.extend(state_log)
    hf.load_weights(model, g, spec, layout)
    k = spec.num_experts_per_tok
    per_prompt = []
    for i, ids in enumerate(prompts):
        lg, hf_margin = hf.logits(model, ids, k)
        np.save(os.path.join(out, f"logits_{tag}_{i}.npy"), lg.astype(np.float32))
        margins: list[float] = []
        ref = numpy_ref.forward(g, spec, ids, margins)
        err = rel_l2_rows(lg.astype(np.float64), ref)
        gr = hf.greedy(model, ids)
        with open(os.path.join(out, f"greedy_{tag}_{i}.json"), "w") as f:
            json.dump(gr, f)
        per_prompt.append({
            "index": i, "n_tokens": len(ids),
            "max_rel_l2_vs_numpy_f64": float(err.max()),
            "router_min_margin_numpy": min(margins) if margins else None,
            "router_min_margin_hf": hf_margin,
            "logits_std": float(lg.std()),
            "greedy_min_top1_minus_top2": min(gr["top1_minus_top2_logit"]),
            "greedy_consistent_with_uncached_prefill": gr["consistent_with_uncached_prefill"],
            "distinct_greedy_tokens": len(set(gr["generated"])),
        })
    meta = {"tag": tag, "spec": q3.spec_dict(spec), "expert_layout": str(layout),
            "versions": hf.versions(), "prompts": per_prompt, **extra}
    with open(os.path.join(out, f"meta_{tag}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def check_problems(meta: dict) -> list[str]:
    problems = []
    for p in meta["prompts"]:
        if p["max_rel_l2_vs_numpy_f64"] > NUMPY_CHECK_REL_L2:
            problems.append(f"{meta['tag']}[{p['index']}]: transformers vs numpy rel L2 "
                            f"{p['max_rel_l2_vs_numpy_f64']:.2e} > {NUMPY_CHECK_REL_L2:g}")
        if not p["greedy_consistent_with_uncached_prefill"]:
            problems.append(f"{meta['tag']}[{p['index']}]: cached greedy != uncached argmax")
    return problems


def spec_of_file(meta: dict, tensors: dict, name: str) -> q3.Spec:
    if "token_embd.weight" not in tensors:
        raise RuntimeError("missing tensor token_embd.weight")
    spec = q3.spec_from_metadata(meta, name)
    vocab = tensors["token_embd.weight"].np_shape[0]
    return q3.Spec(**{**q3.spec_dict(spec), "vocab_size": vocab})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--models", default=",".join(q3.SPECS), help="comma list of " + ",".join(q3.SPECS))
    ap.add_argument("--gguf-only", action="store_true", help="write the F32 GGUF files only (no torch)")
    ap.add_argument("--dequant-from", help="a qwen3moe GGUF (F32/F16/BF16/Q8_0/Q4_K/Q5_K/Q6_K tensors)")
    ap.add_argument("--tag", help="output name for --dequant-from (default: the file name without .gguf)")
    ap.add_argument("--prompts-like", default="small-q", help="model whose prompts to use (--dequant-from)")
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    log: list[str] = []
    metas = []

    if args.dequant_from:
        import hf_reference

        hf_reference.setup_determinism(args.threads)
        tag = args.tag or os.path.basename(args.dequant_from).removesuffix(".gguf")
        meta, tensors = gguf_min.read_gguf(args.dequant_from)
        spec = spec_of_file(meta, tensors, tag)
        types = Counter(t.type_name for t in tensors.values())
        print(f"{args.dequant_from}: {len(tensors)} tensors, types {dict(types)}")
        g = q3.gguf_arrays(tensors, ggml_dequant.dequantize)
        prompts = q3.prompts_for(args.prompts_like, spec.vocab_size)
        extra = {"source_gguf": os.path.basename(args.dequant_from), "tensor_types": dict(types),
                 "tensor_type_by_name": {n: t.type_name for n, t in tensors.items()},
                 "prompts_like": args.prompts_like}
        metas.append(reference_outputs(g, spec, tag, prompts, args.out, extra, log))
    else:
        names = [n for n in args.models.split(",") if n]
        unknown = [n for n in names if n not in q3.SPECS]
        if unknown:
            ap.error(f"unknown models {unknown}; known: {list(q3.SPECS)}")
        if not args.gguf_only:
            import hf_reference

            hf_reference.setup_determinism(args.threads)
        for name in names:
            path, g, meta = write_f32_model(q3.SPECS[name], args.out)
            print(f"wrote {path} ({os.path.getsize(path)} bytes)")
            if args.gguf_only:
                continue
            spec = spec_of_file(meta, gguf_min.read_gguf(path)[1], name)
            prompts = q3.prompts_for(name, spec.vocab_size)
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            extra = {"source_gguf": os.path.basename(path), "source_gguf_sha256": sha,
                     "tensor_types": {"F32": len(g)}}
            metas.append(reference_outputs(g, spec, name, prompts, args.out, extra, log))

    if log:
        name = f"transformers_state_{metas[0]['tag']}.log" if args.dequant_from else "transformers_state.log"
        with open(os.path.join(args.out, name), "w") as f:
            f.write("\n".join(log) + "\n")
    problems = [p for m in metas for p in check_problems(m)]
    print_summary(args.out, metas, time.time() - t0)
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


def print_summary(out: str, metas: list[dict], elapsed: float) -> None:
    print(f"\n== reference fixtures in {out} ({elapsed:.1f} s) ==")
    if metas:
        print("versions:", metas[0]["versions"])
    for m in metas:
        s = m["spec"]
        print(f"{m['tag']}: hidden {s['hidden_size']} layers {s['num_hidden_layers']} heads "
              f"{s['num_attention_heads']}/{s['num_key_value_heads']} head_dim {s['head_dim']} experts "
              f"{s['num_experts_per_tok']}/{s['num_experts']} norm_topk {s['norm_topk_prob']} "
              f"vocab {s['vocab_size']}; layout {m['expert_layout']}")
        for p in m["prompts"]:
            print(f"  [{p['index']}] T={p['n_tokens']:3d} relL2(hf,np64)={p['max_rel_l2_vs_numpy_f64']:.1e} "
                  f"router_margin={p['router_min_margin_numpy']:.2e} logit_std={p['logits_std']:.2f} "
                  f"greedy_margin={p['greedy_min_top1_minus_top2']:.2e} "
                  f"distinct={p['distinct_greedy_tokens']} consistent={p['greedy_consistent_with_uncached_prefill']}")
    total = 0
    for fn in sorted(os.listdir(out)):
        total += os.path.getsize(os.path.join(out, fn))
    print(f"{len(os.listdir(out))} files, {total / 1e6:.2f} MB total")


if __name__ == "__main__":
    sys.exit(main())
