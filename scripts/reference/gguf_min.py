"""Minimal GGUF v3 writer (F32 tensors) and reader (any tensor type, raw bytes).

Pure Python + numpy, so the reference script runs where the `gguf` package is
not installed. Layout follows the GGUF spec (ggml/docs/gguf.md):

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
    padding to `general.alignment` (default 32) | tensor data (each aligned)

`ne` is ggml's dimension order (fastest-varying first), i.e. the reverse of the
numpy shape of a C-contiguous array: a numpy array of shape (E, F, H) is
written with ne = [H, F, E].
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32 = 0, 1, 2, 3, 4, 5, 6
T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = 7, 8, 9, 10, 11, 12

_SCALAR_FMT = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h",
    T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?",
    T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}

# ggml tensor types used here: type id -> (name, block elements, block bytes).
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    30: ("BF16", 1, 2),
}
GGML_TYPE_F32 = 0


class GGUFError(Exception):
    """A GGUF file that cannot be read or written; the message names the problem."""


@dataclass
class MetaValue:
    """A typed metadata value: `vtype` is the GGUF value type, `sub` the element type of arrays."""

    vtype: int
    value: Any
    sub: int | None = None


def u32(v: int) -> MetaValue:
    return MetaValue(T_UINT32, int(v))


def f32(v: float) -> MetaValue:
    return MetaValue(T_FLOAT32, float(v))


def boolean(v: bool) -> MetaValue:
    return MetaValue(T_BOOL, bool(v))


def string(v: str) -> MetaValue:
    return MetaValue(T_STRING, str(v))


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_value(vtype: int, value: Any, sub: int | None) -> bytes:
    if vtype == T_STRING:
        return _pack_string(value)
    if vtype == T_ARRAY:
        if sub is None:
            raise GGUFError("array metadata value needs an element type")
        out = struct.pack("<IQ", sub, len(value))
        return out + b"".join(_pack_value(sub, v, None) for v in value)
    fmt = _SCALAR_FMT.get(vtype)
    if fmt is None:
        raise GGUFError(f"unknown metadata value type {vtype}")
    return struct.pack(fmt, value)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def write_gguf_f32(path: str, metadata: dict[str, MetaValue], tensors: dict[str, np.ndarray],
                   alignment: int = DEFAULT_ALIGNMENT) -> int:
    """Write `tensors` (numpy arrays, stored as F32) with `metadata`; returns the file size.

    Tensors are written in the dict's order. `general.alignment` is written only
    when it differs from the default, as llama.cpp does.
    """
    if alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"alignment {alignment} is not a power of two")
    meta = dict(metadata)
    if alignment != DEFAULT_ALIGNMENT:
        meta["general.alignment"] = u32(alignment)
    header = bytearray(GGUF_MAGIC)
    header += struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(meta))
    for key, mv in meta.items():
        header += _pack_string(key) + struct.pack("<I", mv.vtype) + _pack_value(mv.vtype, mv.value, mv.sub)
    datas = []
    offset = 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        if not 1 <= a.ndim <= 4:
            raise GGUFError(f"tensor {name}: {a.ndim} dims, GGUF allows 1..4")
        ne = list(reversed(a.shape))
        header += _pack_string(name) + struct.pack("<I", a.ndim)
        header += struct.pack(f"<{a.ndim}Q", *ne) + struct.pack("<IQ", GGML_TYPE_F32, offset)
        datas.append((offset, a.tobytes()))
        offset = _align(offset + a.nbytes, alignment)
    data_start = _align(len(header), alignment)
    with open(path, "wb") as f:
        f.write(header)
        f.write(b"\0" * (data_start - len(header)))
        pos = 0
        for off, raw in datas:
            f.write(b"\0" * (off - pos))
            f.write(raw)
            pos = off + len(raw)
        f.write(b"\0" * (_align(pos, alignment) - pos))
        size = f.tell()
    return size


@dataclass
class TensorInfo:
    """One tensor of a GGUF file: ggml dims `ne`, ggml type id and its raw bytes."""

    name: str
    ne: list[int]
    ggml_type: int
    data: np.ndarray = field(repr=False)  # uint8 view into the file

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type{self.ggml_type}", 0, 0))[0]

    @property
    def np_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.ne))


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"truncated file: need {n} bytes at offset {self.pos}, file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        return bytes(self.take(n)).decode("utf-8")

    def value(self, vtype: int):
        if vtype == T_STRING:
            return self.string()
        if vtype == T_ARRAY:
            sub = self.unpack("<I")
            n = self.unpack("<Q")
            if n > len(self.buf) - self.pos:
                raise GGUFError(f"array of {n} elements at offset {self.pos} exceeds the file")
            return [self.value(sub) for _ in range(n)]
        fmt = _SCALAR_FMT.get(vtype)
        if fmt is None:
            raise GGUFError(f"unknown metadata value type {vtype} at offset {self.pos}")
        return self.unpack(fmt)


def read_gguf(path: str) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """Read metadata (plain Python values) and tensors (raw bytes, memory-mapped) of a GGUF file."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(mm))
    if bytes(cur.take(4)) != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (bad magic)")
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"{path}: unsupported GGUF version {version}")
    n_tensors = cur.unpack("<Q")
    n_kv = cur.unpack("<Q")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("<I"))
    alignment = int(meta.get("general.alignment", DEFAULT_ALIGNMENT))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if not 1 <= n_dims <= 4:
            raise GGUFError(f"tensor {name}: n_dims {n_dims} outside 1..4")
        ne = [cur.unpack("<Q") for _ in range(n_dims)]
        infos.append((name, ne, cur.unpack("<I"), cur.unpack("<Q")))
    data_start = _align(cur.pos, alignment)
    tensors: dict[str, TensorInfo] = {}
    for name, ne, gtype, off in infos:
        if gtype not in GGML_TYPES:
            raise GGUFError(f"tensor {name}: unsupported ggml type {gtype}")
        _, blk, blk_bytes = GGML_TYPES[gtype]
        n = int(np.prod(ne))
        if ne[0] % blk:
            raise GGUFError(f"tensor {name}: ne[0]={ne[0]} not a multiple of block size {blk}")
        nbytes = n // blk * blk_bytes
        start = data_start + off
        if start + nbytes > len(mm):
            raise GGUFError(f"tensor {name}: data [{start}, {start + nbytes}) beyond file end {len(mm)}")
        tensors[name] = TensorInfo(name, ne, gtype, mm[start:start + nbytes])
    return meta, tensors
