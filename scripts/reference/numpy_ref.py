"""An independent float64 numpy forward pass of Qwen3-MoE straight from GGUF-named tensors,
written from llama.cpp's semantics (not from transformers' code). The reference script
compares it with transformers' logits: agreement proves the GGUF tensors, their names and
the GGUF -> HF mapping (gate/up halves, expert axes, head layout) are consistent.
"""

from __future__ import annotations

import numpy as np

from qwen3moe_gguf import Spec


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_neox(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """NeoX-order RoPE on [T, heads, d]: pairs (i, i + d/2) rotate by pos * theta^(-2i/d)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # [T, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def forward(g: dict[str, np.ndarray], spec: Spec, ids: list[int],
            router_margins: list | None = None) -> np.ndarray:
    """Logits [T, vocab] (float64) of every position of `ids`, one causal prefill.

    If `router_margins` is a list, the smallest gap between the k-th and (k+1)-th router
    logit over all tokens of each layer is appended to it (small gaps = fragile top-k).
    """
    f = {k: v.astype(np.float64) for k, v in g.items()}
    eps, T = spec.rms_norm_eps, len(ids)
    nq, nkv, hd, k = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim, spec.num_experts_per_tok
    pos = np.arange(T)
    x = f["token_embd.weight"][np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(spec.num_hidden_layers):
        b = f"blk.{i}."
        h = rms_norm(x, f[b + "attn_norm.weight"], eps)
        q = (h @ f[b + "attn_q.weight"].T).reshape(T, nq, hd)
        kk = (h @ f[b + "attn_k.weight"].T).reshape(T, nkv, hd)
        v = (h @ f[b + "attn_v.weight"].T).reshape(T, nkv, hd)
        q = rope_neox(rms_norm(q, f[b + "attn_q_norm.weight"], eps), pos, spec.rope_theta)
        kk = rope_neox(rms_norm(kk, f[b + "attn_k_norm.weight"], eps), pos, spec.rope_theta)
        group = nq // nkv
        out = np.empty((T, nq, hd))
        for hq in range(nq):
            kv = hq // group  # GQA: consecutive q heads share a kv head
            s = q[:, hq] @ kk[:, kv].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, hq] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv]
        x = x + out.reshape(T, nq * hd) @ f[b + "attn_output.weight"].T

        h = rms_norm(x, f[b + "ffn_norm.weight"], eps)
        logits = h @ f[b + "ffn_gate_inp.weight"].T  # [T, E]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        order = np.argsort(-logits, axis=1, kind="stable")
        top = order[:, :k]
        if router_margins is not None and k < spec.num_experts:
            srt = np.take_along_axis(logits, order, axis=1)
            router_margins.append(float(np.min(srt[:, k - 1] - srt[:, k])))
        wts = np.take_along_axis(p, top, axis=1)
        if spec.norm_topk_prob:
            wts = wts / wts.sum(axis=1, keepdims=True)
        gate, up, down = (f[b + f"ffn_{n}_exps.weight"] for n in ("gate", "up", "down"))
        moe = np.zeros_like(x)
        for t in range(T):
            for j in range(k):
                e = top[t, j]
                act = silu(gate[e] @ h[t]) * (up[e] @ h[t])
                moe[t] += wts[t, j] * (down[e] @ act)
        x = x + moe
    x = rms_norm(x, f["output_norm.weight"], eps)
    return x @ f["output.weight"].T
