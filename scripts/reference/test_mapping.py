"""numpy-only checks of the GGUF <-> transformers mapping and of the numpy reference forward.

    python3 -m pytest -q scripts/reference/test_mapping.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy_ref  # noqa: E402
import qwen3moe_gguf as q3  # noqa: E402

SPEC = q3.SPECS["tiny-b"]


@pytest.fixture(scope="module")
def weights():
    return q3.random_weights(SPEC)


def test_weights_are_seeded_and_shaped(weights):
    again = q3.random_weights(SPEC)
    assert all(np.array_equal(weights[k], again[k]) for k in weights)
    E, F, H = SPEC.num_experts, SPEC.moe_intermediate_size, SPEC.hidden_size
    assert weights["blk.0.ffn_gate_exps.weight"].shape == (E, F, H)  # ne [H, F, E]
    assert weights["blk.0.ffn_down_exps.weight"].shape == (E, H, F)  # ne [F, H, E]
    assert weights["blk.0.attn_q.weight"].shape == (SPEC.num_attention_heads * SPEC.head_dim, H)


def test_detect_layout():
    fused = ["model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"]
    assert q3.detect_layout(fused) == q3.ExpertLayout("fused")
    assert q3.detect_layout([k + ".weight" for k in fused]).suffix == ".weight"
    assert q3.detect_layout(["model.layers.0.mlp.experts.0.gate_proj.weight"]).kind == "per_expert"
    with pytest.raises(ValueError, match="unrecognised"):
        q3.detect_layout(["model.layers.0.mlp.w1"])


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("concatenated", [True, False])
def test_fused_mapping(weights, transposed, concatenated):
    sd = q3.hf_state_from_gguf(weights, SPEC, q3.ExpertLayout("fused", "", transposed, concatenated))
    gate, up = weights["blk.1.ffn_gate_exps.weight"], weights["blk.1.ffn_up_exps.weight"]
    down = weights["blk.1.ffn_down_exps.weight"]
    gu, dn = sd["model.layers.1.mlp.experts.gate_up_proj"], sd["model.layers.1.mlp.experts.down_proj"]
    if transposed:
        gu, dn = gu.transpose(0, 2, 1), dn.transpose(0, 2, 1)
    F = SPEC.moe_intermediate_size
    if concatenated:  # transformers: gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)
        assert np.array_equal(gu[:, :F], gate) and np.array_equal(gu[:, F:], up)
    else:
        assert np.array_equal(gu[:, 0::2], gate) and np.array_equal(gu[:, 1::2], up)
    assert np.array_equal(dn, down)
    assert np.array_equal(sd["lm_head.weight"], weights["output.weight"])
    assert np.array_equal(sd["model.layers.2.self_attn.k_norm.weight"], weights["blk.2.attn_k_norm.weight"])


def test_per_expert_mapping(weights):
    sd = q3.hf_state_from_gguf(weights, SPEC, q3.ExpertLayout("per_expert"))
    assert np.array_equal(sd["model.layers.0.mlp.experts.5.up_proj.weight"], weights["blk.0.ffn_up_exps.weight"][5])
    assert np.array_equal(sd["model.layers.0.mlp.experts.5.down_proj.weight"],
                          weights["blk.0.ffn_down_exps.weight"][5])
    assert "model.layers.0.mlp.experts.gate_up_proj" not in sd


def test_numpy_forward_is_causal_and_routes_variously(weights):
    ids = q3.prompts_for(SPEC.name, SPEC.vocab_size)[2]  # 40 tokens
    margins: list[float] = []
    full = numpy_ref.forward(weights, SPEC, ids, margins)
    prefix = numpy_ref.forward(weights, SPEC, ids[:10])
    np.testing.assert_allclose(full[:10], prefix, rtol=1e-10, atol=1e-10)
    assert len(margins) == SPEC.num_hidden_layers and min(margins) > 0
    assert full.std() > 1.0  # healthy logits, not the near-zero ones of a std-0.02 init


def test_norm_topk_prob_changes_the_output(weights):
    ids = [1, 2, 3]
    on = numpy_ref.forward(weights, q3.Spec(**{**q3.spec_dict(SPEC), "norm_topk_prob": True}), ids)
    off = numpy_ref.forward(weights, SPEC, ids)
    assert np.abs(on - off).max() > 1e-3


def test_rope_neox_rotates_half_pairs():
    x = np.zeros((2, 1, 4))
    x[:, 0, 0] = 1.0  # pair (0, 2)
    y = numpy_ref.rope_neox(x, np.array([0, 1]), theta=10000.0)
    np.testing.assert_allclose(y[0, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(y[1, 0], [np.cos(1), 0, np.sin(1), 0])


def test_metadata_roundtrip():
    meta = {k: v.value for k, v in q3.gguf_metadata(SPEC).items()}
    back = q3.spec_from_metadata(meta, SPEC.name)
    assert back.head_dim == SPEC.head_dim and back.norm_topk_prob == SPEC.norm_topk_prob
    assert back.num_experts_per_tok == 4 and back.rope_theta == 1e6
    with pytest.raises(ValueError, match="block_count"):
        q3.spec_from_metadata({k: v for k, v in meta.items() if not k.endswith("block_count")}, "x")
