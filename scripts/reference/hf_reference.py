"""The torch / transformers half of the reference script: build Qwen3MoeForCausalLM from a
Spec, load GGUF weights into it, and compute logits and greedy continuations.

All torch imports live in this module so the rest runs (and is tested) without torch.
"""

from __future__ import annotations

import numpy as np

from qwen3moe_gguf import N_GENERATE, ExpertLayout, Spec, detect_layout, hf_state_from_gguf


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}


def setup_determinism(threads: int) -> None:
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def build_model(spec: Spec):
    """A float32, eval-mode Qwen3MoeForCausalLM with eager attention and eager experts."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        hidden_act="silu",
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        # transformers 5.x reads rope_parameters; 4.x reads rope_theta. Same value in both.
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        rope_theta=spec.rope_theta,
        attention_bias=False,
        use_sliding_window=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        moe_intermediate_size=spec.moe_intermediate_size,
        num_experts=spec.num_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        norm_topk_prob=spec.norm_topk_prob,
        tie_word_embeddings=False,
        use_cache=True,
        attn_implementation="eager",
        # 5.x dispatches experts to "grouped_mm" by default; eager = the plain per-expert loop.
        experts_implementation="eager",
    )
    model = Qwen3MoeForCausalLM(cfg).to(torch.float32).eval()
    attn = model.config._attn_implementation
    if attn != "eager":
        raise RuntimeError(f"attention implementation is {attn!r}, wanted 'eager'")
    return model


def describe_and_detect(model, spec: Spec) -> tuple[ExpertLayout, list[str]]:
    """Detect how experts are stored; return the layout and a log of every state-dict entry."""
    sd = model.state_dict()
    log = [f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sd.items()]
    experts = model.model.layers[0].mlp.experts
    transposed = bool(getattr(experts, "is_transposed", False))
    concatenated = bool(getattr(experts, "is_concatenated", True))
    layout = detect_layout(list(sd.keys()), transposed, concatenated)
    attn0 = model.model.layers[0].self_attn
    log.append(f"# experts module: {type(experts).__name__}, layout {layout}")
    log.append(f"# attn head_dim {attn0.head_dim}, scaling {attn0.scaling}")
    log.append(f"# _attn_implementation {model.config._attn_implementation!r}, "
               f"_experts_implementation {getattr(model.config, '_experts_implementation', None)!r}")
    if attn0.head_dim != spec.head_dim:
        raise RuntimeError(f"model head_dim {attn0.head_dim} != spec head_dim {spec.head_dim}: "
                           "this transformers ignores config.head_dim")
    inv = model.model.rotary_emb.inv_freq.detach().double().numpy()
    want = spec.rope_theta ** (-np.arange(0, spec.head_dim, 2) / spec.head_dim)
    if inv.shape != want.shape or not np.allclose(inv, want, rtol=1e-5):
        raise RuntimeError(f"rotary inv_freq does not match rope_theta {spec.rope_theta}")
    return layout, log


def load_weights(model, g: dict[str, np.ndarray], spec: Spec, layout: ExpertLayout) -> None:
    """Load GGUF-named float32 arrays into the model; every key and shape must match exactly."""
    import torch

    target = model.state_dict()
    new = hf_state_from_gguf(g, spec, layout)
    missing = sorted(set(target) - set(new))
    extra = sorted(set(new) - set(target))
    if missing or extra:
        raise RuntimeError(f"state dict mismatch: missing {missing[:8]}, unexpected {extra[:8]}")
    for k, v in new.items():
        if tuple(target[k].shape) != v.shape:
            raise RuntimeError(f"{k}: model shape {tuple(target[k].shape)} vs GGUF-derived {v.shape}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                           for k, v in new.items()}, strict=True)


def _router_min_margin(router_logits, k: int) -> float | None:
    """Smallest (k-th minus (k+1)-th) router logit over all tokens and layers."""
    if not router_logits:
        return None
    best = None
    for rl in router_logits:
        a = np.sort(rl.detach().float().numpy().reshape(-1, rl.shape[-1]), axis=1)[:, ::-1]
        if k >= a.shape[1]:
            return None
        m = float(np.min(a[:, k - 1] - a[:, k]))
        best = m if best is None else min(best, m)
    return best


def logits(model, ids: list[int], k: int) -> tuple[np.ndarray, float | None]:
    """Float32 logits [T, vocab] of every position (one prefill, no cache) and the router margin."""
    import torch

    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False,
                    output_router_logits=True)
    margin = None
    try:
        margin = _router_min_margin(out.router_logits, k)
    except (AttributeError, TypeError):
        pass
    return out.logits[0].float().numpy(), margin


def greedy(model, ids: list[int]) -> dict:
    """16 greedy tokens via generate(use_cache=True), plus each step's top-1 minus top-2 logit
    and a check that a cache-free prefill of prompt + continuation picks the same tokens."""
    import torch

    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=N_GENERATE, use_cache=True, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=0)
        gen = out.sequences[0, len(ids):].tolist()
        margins = []
        for s in out.scores:
            top2 = torch.topk(s[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
        full = torch.tensor([ids + gen[:-1]], dtype=torch.long)
        lg = model(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False).logits[0]
        recheck = lg[len(ids) - 1:].argmax(dim=-1).tolist()
    return {"prompt": ids, "generated": gen, "top1_minus_top2_logit": margins,
            "consistent_with_uncached_prefill": recheck == gen}
