"""Checks the numpy dequantiser and the GGUF writer against gguf-py (llama.cpp's own Python package).

Run on a machine with `pip install gguf numpy pytest`:
    python3 -m pytest -q scripts/reference/test_ggml_dequant.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ggml_dequant  # noqa: E402
import gguf_min  # noqa: E402

gguf = pytest.importorskip("gguf")

N_BLOCKS = 4096  # enough random blocks to hit every bit pattern of the scale/bit packing


def random_blocks(type_name: str, rng: np.random.Generator) -> np.ndarray:
    """Random block bytes with finite fp16 scale fields (random bytes may encode inf/nan)."""
    bb = ggml_dequant.BLOCK_BYTES[type_name]
    raw = rng.integers(0, 256, size=(N_BLOCKS, bb), dtype=np.uint8)
    half_fields = {"Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}[type_name]
    for off in half_fields:
        vals = rng.normal(0, 0.05, size=N_BLOCKS).astype("<f2")
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(N_BLOCKS, 2)
    return raw


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_dequant_matches_gguf_py(type_name):
    rng = np.random.default_rng(1234)
    raw = random_blocks(type_name, rng)
    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    n_per_block = 32 if type_name == "Q8_0" else 256
    ours = ggml_dequant.dequantize(raw, type_name, N_BLOCKS * n_per_block)
    theirs = gguf.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
    # Both compute the same float32 products; allow 1 ulp for a different multiplication order.
    np.testing.assert_allclose(ours, theirs, rtol=2e-7, atol=1e-12)


def test_q8_0_roundtrip_through_gguf_py_quantiser():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 256)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    y = ggml_dequant.dequantize(q, "Q8_0", x.size).reshape(x.shape)
    # Q8_0 step d is amax/127 per 32 values, stored as fp16 (relative error <= 2^-11):
    # |q*d16 - x| <= d/2 (rounding q) + 127 * d * 2^-11 (rounding d).
    step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    bound = step * (0.5 + 127 * 2.0**-11) * (1 + 1e-5)
    assert np.all(np.abs((y - x).reshape(-1, 32)) <= bound)


def test_float_types():
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000).astype(np.float32)
    assert np.array_equal(ggml_dequant.dequantize(x.view(np.uint8), "F32", 1000), x)
    h = x.astype(np.float16)
    assert np.array_equal(ggml_dequant.dequantize(h.view(np.uint8), "F16", 1000), h.astype(np.float32))
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    expect = (bf.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(ggml_dequant.dequantize(bf.view(np.uint8), "BF16", 1000), expect)


def test_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="Q8_0"):
        ggml_dequant.dequantize(np.zeros(34, np.uint8), "Q8_0", 64)
    with pytest.raises(ValueError, match="Q3_K"):
        ggml_dequant.dequantize(np.zeros(110, np.uint8), "Q3_K", 256)


def test_writer_readable_by_gguf_py(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {
        "a.weight": rng.normal(size=(3, 5)).astype(np.float32),
        "b.weight": rng.normal(size=(7,)).astype(np.float32),
        "c.exps": rng.normal(size=(4, 6, 8)).astype(np.float32),
    }
    meta = {
        "general.architecture": gguf_min.string("qwen3moe"),
        "qwen3moe.block_count": gguf_min.u32(2),
        "qwen3moe.rope.freq_base": gguf_min.f32(1e6),
        "qwen3moe.expert_weights_norm": gguf_min.boolean(True),
    }
    path = str(tmp_path / "t.gguf")
    gguf_min.write_gguf_f32(path, meta, tensors)
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "qwen3moe"
    assert r.fields["qwen3moe.block_count"].contents() == 2
    assert r.fields["qwen3moe.rope.freq_base"].contents() == pytest.approx(1e6)
    assert r.fields["qwen3moe.expert_weights_norm"].contents() is True
    by_name = {t.name: t for t in r.tensors}
    for name, arr in tensors.items():
        t = by_name[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == list(reversed(arr.shape))  # ggml ne order
        assert np.array_equal(np.asarray(t.data).reshape(arr.shape), arr)
        assert t.data_offset % 32 == 0
    # and our own reader agrees
    m2, t2 = gguf_min.read_gguf(path)
    assert m2["qwen3moe.expert_weights_norm"] is True
    for name, arr in tensors.items():
        got = ggml_dequant.dequantize(t2[name].data, "F32", arr.size).reshape(t2[name].np_shape)
        assert np.array_equal(got, arr)


def test_reader_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUX" + b"\0" * 20)
    with pytest.raises(gguf_min.GGUFError, match="magic"):
        gguf_min.read_gguf(str(p))
    good = tmp_path / "good.gguf"
    gguf_min.write_gguf_f32(str(good), {"general.architecture": gguf_min.string("x")},
                            {"t": np.ones((4, 4), np.float32)})
    p.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(gguf_min.GGUFError, match="beyond file end"):
        gguf_min.read_gguf(str(p))


def test_reader_reads_gguf_py_quantised_file(tmp_path):
    """A Q8_0 tensor written by gguf-py's writer dequantises to gguf-py's values."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 64)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    path = str(tmp_path / "q.gguf")
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_tensor("q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _, t = gguf_min.read_gguf(path)
    info = t["q.weight"]
    assert info.type_name == "Q8_0" and info.np_shape == (8, 64)
    got = ggml_dequant.dequantize(info.data, "Q8_0", x.size)
    want = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(-1)
    assert np.array_equal(got, want)
