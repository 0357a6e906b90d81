"""Qwen3-MoE model specs, seeded random weights, llama.cpp GGUF naming/metadata, and the
mapping between GGUF tensors and Hugging Face transformers' state dict. numpy only.

GGUF naming and shapes follow llama.cpp's convert_hf_to_gguf.py (Qwen3MoeModel, which is
Qwen2MoeModel with arch "qwen3moe"): HF Linear weights [out, in] are written as-is, so their
ggml ne is [in, out]; per-expert weights are stacked on a new leading axis, giving
ffn_gate_exps / ffn_up_exps numpy (E, F, H) = ne [H, F, E] and ffn_down_exps numpy (E, H, F)
= ne [F, H, E]. Q and K are NOT permuted (only LlamaModel permutes them, for the
interleaved-pair RoPE; qwen2/qwen3 use NeoX-order RoPE in llama.cpp and rotate_half in HF).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

import numpy as np

import gguf_min as gm

ARCH = "qwen3moe"


@dataclass(frozen=True)
class Spec:
    """Hyper-parameters of one fixture model (names as in HF's Qwen3MoeConfig)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    vocab_size: int
    norm_topk_prob: bool
    intermediate_size: int = 128  # dense MLP size; unused (every layer is MoE) but in the metadata
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    # 512 > the 300-token prompt + 16 generated tokens, so the engine's context check accepts it.
    max_position_embeddings: int = 512
    seed: int = 0


SPECS = {
    # head_dim 32 != hidden/heads = 16: the odd-head_dim case; norm_topk_prob on.
    "tiny-a": Spec("tiny-a", 64, 2, 4, 2, 32, 8, 2, 32, 512, True, seed=1001),
    # head_dim 16 == hidden/heads, norm_topk_prob off, top-4 of 16, 3 layers.
    "tiny-b": Spec("tiny-b", 64, 3, 4, 2, 16, 16, 4, 32, 512, False, seed=1002),
    # k-quant friendly: every quantised row length (hidden 256, moe_intermediate 256) is a
    # multiple of 256; the source for the engine's Q8_0 / Q4_K / Q6_K files.
    "small-q": Spec("small-q", 256, 2, 4, 2, 64, 8, 2, 256, 1024, True, intermediate_size=512, seed=1003),
}

PROMPT_LENGTHS = [1, 7, 40, 300]  # 300 > the 256-token prefill chunk of the engine test
N_GENERATE = 16


def prompts_for(name: str, vocab_size: int) -> list[list[int]]:
    """Seeded token-id prompts; the seed depends only on the model name (stable across runs)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return [rng.integers(0, vocab_size, size=n).tolist() for n in PROMPT_LENGTHS]


# --- weights ---------------------------------------------------------------------------

def random_weights(spec: Spec) -> dict[str, np.ndarray]:
    """Seeded float32 weights under GGUF names, numpy shapes (= reversed ggml ne).

    Scales are chosen for a healthy signal instead of HF's std-0.02 init (which gives
    near-zero logits and a near-uniform router): every projection has std 1/sqrt(fan_in),
    so activations stay O(1); norm weights are 1 + N(0, 0.1) (q/k norms 1 + N(0, 0.2));
    the router has std 2/sqrt(H), giving router logits of std ~2, so top-k choices vary
    from token to token; the output head has std 3/sqrt(H), giving logits of std ~3.
    """
    rng = np.random.default_rng(spec.seed)
    H, V, E, F = spec.hidden_size, spec.vocab_size, spec.num_experts, spec.moe_intermediate_size
    nq, nkv, hd = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim

    def normal(shape, std):
        return (rng.standard_normal(size=shape) * std).astype(np.float32)

    def norm_w(n, spread=0.1):
        return (1.0 + rng.standard_normal(size=n) * spread).astype(np.float32)

    w = {"token_embd.weight": normal((V, H), 1.0)}
    for i in range(spec.num_hidden_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm_w(H)
        w[p + "attn_q.weight"] = normal((nq * hd, H), H ** -0.5)
        w[p + "attn_k.weight"] = normal((nkv * hd, H), H ** -0.5)
        w[p + "attn_v.weight"] = normal((nkv * hd, H), H ** -0.5)
        w[p + "attn_output.weight"] = normal((H, nq * hd), (nq * hd) ** -0.5)
        w[p + "attn_q_norm.weight"] = norm_w(hd, 0.2)
        w[p + "attn_k_norm.weight"] = norm_w(hd, 0.2)
        w[p + "ffn_norm.weight"] = norm_w(H)
        w[p + "ffn_gate_inp.weight"] = normal((E, H), 2.0 * H ** -0.5)
        w[p + "ffn_gate_exps.weight"] = normal((E, F, H), H ** -0.5)
        w[p + "ffn_up_exps.weight"] = normal((E, F, H), H ** -0.5)
        w[p + "ffn_down_exps.weight"] = normal((E, H, F), F ** -0.5)
    w["output_norm.weight"] = norm_w(H)
    w["output.weight"] = normal((V, H), 3.0 * H ** -0.5)
    return w


def gguf_metadata(spec: Spec) -> dict[str, gm.MetaValue]:
    """llama.cpp metadata keys for qwen3moe (types as convert_hf_to_gguf.py writes them)."""
    a = ARCH
    return {
        "general.architecture": gm.string(a),
        "general.name": gm.string(spec.name),
        "general.file_type": gm.u32(0),  # LLAMA_FTYPE_ALL_F32
        f"{a}.block_count": gm.u32(spec.num_hidden_layers),
        f"{a}.context_length": gm.u32(spec.max_position_embeddings),
        f"{a}.embedding_length": gm.u32(spec.hidden_size),
        f"{a}.feed_forward_length": gm.u32(spec.intermediate_size),
        f"{a}.attention.head_count": gm.u32(spec.num_attention_heads),
        f"{a}.attention.head_count_kv": gm.u32(spec.num_key_value_heads),
        f"{a}.attention.key_length": gm.u32(spec.head_dim),
        f"{a}.attention.value_length": gm.u32(spec.head_dim),
        f"{a}.rope.freq_base": gm.f32(spec.rope_theta),
        f"{a}.attention.layer_norm_rms_epsilon": gm.f32(spec.rms_norm_eps),
        f"{a}.expert_count": gm.u32(spec.num_experts),
        f"{a}.expert_used_count": gm.u32(spec.num_experts_per_tok),
        f"{a}.expert_feed_forward_length": gm.u32(spec.moe_intermediate_size),
        f"{a}.expert_weights_norm": gm.boolean(spec.norm_topk_prob),
    }


def spec_from_metadata(meta: dict, name: str) -> Spec:
    """Rebuild a Spec from GGUF metadata (values as stored, e.g. eps rounded to float32)."""
    a = meta.get("general.architecture")
    if a != ARCH:
        raise ValueError(f"general.architecture is {a!r}, expected {ARCH!r}")

    def get(key):
        full = f"{a}.{key}"
        if full not in meta:
            raise ValueError(f"missing metadata key {full}")
        return meta[full]

    return Spec(
        name=name,
        hidden_size=int(get("embedding_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=int(get("attention.head_count")),
        num_key_value_heads=int(get("attention.head_count_kv")),
        head_dim=int(get("attention.key_length")),
        num_experts=int(get("expert_count")),
        num_experts_per_tok=int(get("expert_used_count")),
        moe_intermediate_size=int(get("expert_feed_forward_length")),
        vocab_size=0,  # filled from token_embd by the caller
        norm_topk_prob=bool(meta.get(f"{a}.expert_weights_norm", False)),
        intermediate_size=int(meta.get(f"{a}.feed_forward_length", 128)),
        rope_theta=float(get("rope.freq_base")),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        max_position_embeddings=int(get("context_length")),
    )


def spec_dict(spec: Spec) -> dict:
    return asdict(spec)


# --- GGUF <-> HF state dict ------------------------------------------------------------

@dataclass(frozen=True)
class ExpertLayout:
    """How the installed transformers stores MoE experts.

    kind "fused": `mlp.experts.gate_up_proj` [E, 2F, H] + `mlp.experts.down_proj` [E, H, F]
    (transformers 5.x; `transposed` swaps the last two axes, `concatenated` False means
    gate/up rows interleave). kind "per_expert": `mlp.experts.{e}.{gate,up,down}_proj.weight`
    (transformers 4.x nn.Linear per expert).
    """

    kind: str
    suffix: str = ""  # "" or ".weight" after gate_up_proj / down_proj (fused only)
    transposed: bool = False
    concatenated: bool = True


def detect_layout(keys: list[str], transposed: bool = False, concatenated: bool = True) -> ExpertLayout:
    """Find the expert storage from state-dict key names."""
    for k in keys:
        m = re.fullmatch(r"model\.layers\.0\.mlp\.experts\.gate_up_proj(\.weight)?", k)
        if m:
            return ExpertLayout("fused", m.group(1) or "", transposed, concatenated)
    if "model.layers.0.mlp.experts.0.gate_proj.weight" in keys:
        return ExpertLayout("per_expert")
    sample = [k for k in keys if ".layers.0.mlp" in k]
    raise ValueError(f"unrecognised expert layout; layer-0 MLP keys: {sample}")


def hf_state_from_gguf(g: dict[str, np.ndarray], spec: Spec, layout: ExpertLayout) -> dict[str, np.ndarray]:
    """HF state dict (numpy) from GGUF-named float32 arrays (numpy shapes)."""
    sd = {
        "model.embed_tokens.weight": g["token_embd.weight"],
        "model.norm.weight": g["output_norm.weight"],
        "lm_head.weight": g["output.weight"],
    }
    attn = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
            "q_norm": "attn_q_norm", "k_norm": "attn_k_norm"}
    for i in range(spec.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        sd[p + "input_layernorm.weight"] = g[b + "attn_norm.weight"]
        sd[p + "post_attention_layernorm.weight"] = g[b + "ffn_norm.weight"]
        for hf, gg in attn.items():
            sd[p + f"self_attn.{hf}.weight"] = g[b + gg + ".weight"]
        sd[p + "mlp.gate.weight"] = g[b + "ffn_gate_inp.weight"]
        gate, up, down = (g[b + f"ffn_{x}_exps.weight"] for x in ("gate", "up", "down"))
        E, F, H = gate.shape
        if layout.kind == "per_expert":
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                sd[q + "gate_proj.weight"] = gate[e]
                sd[q + "up_proj.weight"] = up[e]
                sd[q + "down_proj.weight"] = down[e]
            continue
        if layout.concatenated:
            gate_up = np.concatenate([gate, up], axis=1)  # rows [0, F) gate, [F, 2F) up
        else:
            gate_up = np.stack([gate, up], axis=2).reshape(E, 2 * F, H)  # g0 u0 g1 u1 ...
        if layout.transposed:
            gate_up, down = gate_up.transpose(0, 2, 1), down.transpose(0, 2, 1)
        sd[p + "mlp.experts.gate_up_proj" + layout.suffix] = np.ascontiguousarray(gate_up)
        sd[p + "mlp.experts.down_proj" + layout.suffix] = np.ascontiguousarray(down)
    return sd


def gguf_arrays(tensors: dict, dequantize) -> dict[str, np.ndarray]:
    """Dequantise every tensor of a read GGUF into float32 numpy arrays (numpy shapes)."""
    out = {}
    for name, t in tensors.items():
        n = int(np.prod(t.ne))
        out[name] = dequantize(t.data, t.type_name, n).reshape(t.np_shape)
    return out
