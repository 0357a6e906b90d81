"""Vectorised numpy dequantisation of ggml block formats, following llama.cpp's
`dequantize_row_*` in ggml-quants.c step by step (same block layouts, same float32
products in the same order: `d * sc` first, then times the quant, minus `dmin * m`).

Supported: F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K.
"""

from __future__ import annotations

import numpy as np

QK8_0 = 32
QK_K = 256

BLOCK_BYTES = {"Q8_0": 34, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if raw.size % block_bytes:
        raise ValueError(f"{raw.size} bytes is not a whole number of {block_bytes}-byte blocks")
    return raw.reshape(-1, block_bytes)


def _f16(b: np.ndarray) -> np.ndarray:
    """Little-endian fp16 from a (n, 2) uint8 array -> float32 (n, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    """block_q8_0 { ggml_half d; int8_t qs[32]; }  y = d * qs."""
    b = _blocks(raw, 34)
    d = _f16(b[:, 0:2])
    qs = b[:, 2:34].view(np.int8).astype(np.float32)
    return (qs * d).reshape(-1)


def _scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp get_scale_min_k4 for j = 0..7 on (n, 12) packed 6-bit scales/mins."""
    q = scales.astype(np.uint8)
    sc = np.empty((q.shape[0], 8), dtype=np.uint8)
    mn = np.empty((q.shape[0], 8), dtype=np.uint8)
    sc[:, 0:4] = q[:, 0:4] & 63
    mn[:, 0:4] = q[:, 4:8] & 63
    sc[:, 4:8] = (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)
    mn[:, 4:8] = (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)
    return sc, mn


def dequant_q4_k(raw: np.ndarray) -> np.ndarray:
    """block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }.

    For each 64-value chunk j (0..3): sub-block 2j uses the low nibbles of
    qs[32j:32j+32], sub-block 2j+1 the high nibbles; y = d*sc * q - dmin*m.
    """
    b = _blocks(raw, 144)
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16])
    dl = (d * sc.astype(np.float32))[:, :, None]  # (n, 8, 1)
    ml = (dmin * mn.astype(np.float32))[:, :, None]
    qs = b[:, 16:144].reshape(n, 4, 32)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    return (dl * q - ml).reshape(-1)


def dequant_q5_k(raw: np.ndarray) -> np.ndarray:
    """block_q5_K { half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }.

    Like Q4_K, plus a fifth bit: sub-block s takes bit s of qh[l] (adds 16).
    """
    b = _blocks(raw, 176)
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16])
    dl = (d * sc.astype(np.float32))[:, :, None]
    ml = (dmin * mn.astype(np.float32))[:, :, None]
    qh = b[:, 16:48]  # (n, 32)
    qs = b[:, 48:176].reshape(n, 4, 32)
    low = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(n, 8, 32)
    bits = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # (n, 8, 32)
    q = (low + (bits << 4)).astype(np.float32)
    return (dl * q - ml).reshape(-1)


def dequant_q6_k(raw: np.ndarray) -> np.ndarray:
    """block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }.

    Two 128-value halves h; within a half, for l in 0..31 (is = l/16):
      q1 = (ql[l]    & 0xF) | ((qh[l] >> 0) & 3) << 4   -> y[l]      scale sc[is+0]
      q2 = (ql[l+32] & 0xF) | ((qh[l] >> 2) & 3) << 4   -> y[l+32]   scale sc[is+2]
      q3 = (ql[l]    >> 4)  | ((qh[l] >> 4) & 3) << 4   -> y[l+64]   scale sc[is+4]
      q4 = (ql[l+32] >> 4)  | ((qh[l] >> 6) & 3) << 4   -> y[l+96]   scale sc[is+6]
    each minus 32, y = d * sc * q.
    """
    b = _blocks(raw, 210)
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 2, 32)  # [half, ql[l] / ql[l+32], l]
    qh = b[:, 128:192].reshape(n, 2, 32)  # [half, l]
    scales = b[:, 192:208].view(np.int8).astype(np.float32).reshape(n, 2, 8)
    d = _f16(b[:, 208:210]).reshape(n, 1, 1)
    low = np.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
    high = np.stack([(qh >> s) & 3 for s in (0, 2, 4, 6)], axis=2)  # (n, 2, 4, 32)
    q = (low | (high << 4)).astype(np.int16) - 32  # (n, half, quarter, l)
    # scale index for (quarter k, l): is + 2k with is = l // 16  -> sc[2k + l//16]
    sidx = (2 * np.arange(4)[:, None] + (np.arange(32)[None, :] // 16))  # (4, 32)
    dsc = d[:, :, :, None] * scales[:, :, sidx]  # (n, 2, 4, 32), d*sc first as in C
    return (dsc * q.astype(np.float32)).reshape(-1)


def dequantize(raw: np.ndarray, type_name: str, n_elements: int) -> np.ndarray:
    """Dequantise raw tensor bytes of ggml type `type_name` into a flat float32 array."""
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if type_name == "F32":
        out = np.ascontiguousarray(raw).view("<f4").astype(np.float32)
    elif type_name == "F16":
        out = np.ascontiguousarray(raw).view("<f2").astype(np.float32)
    elif type_name == "BF16":
        out = (np.ascontiguousarray(raw).view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif type_name == "Q8_0":
        out = dequant_q8_0(raw)
    elif type_name == "Q4_K":
        out = dequant_q4_k(raw)
    elif type_name == "Q5_K":
        out = dequant_q5_k(raw)
    elif type_name == "Q6_K":
        out = dequant_q6_k(raw)
    else:
        raise ValueError(f"dequantisation of ggml type {type_name} is not implemented")
    if out.size != n_elements:
        raise ValueError(f"{type_name}: got {out.size} values from the bytes, expected {n_elements}")
    return out
