"""Read safetensors checkpoints row block by row block, without torch and without mmap.

The export streams tensors straight from disk into the GGUF file, so peak memory is one
row block (plus a permuted Q/K matrix), not the model: pages are read with `readinto` into
a buffer we own instead of being mapped, which also keeps them out of the process's RSS.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SafetensorsError", "TensorRef", "index_checkpoint", "iter_row_blocks", "read_rows"]

_DTYPES: dict[str, tuple[np.dtype, str]] = {
    "F32": (np.dtype("<f4"), "f32"),
    "F16": (np.dtype("<f2"), "f16"),
    "BF16": (np.dtype("<u2"), "bf16"),  # raw bits; widened to f32 in read_rows
    "F64": (np.dtype("<f8"), "f64"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A checkpoint file that is missing, truncated or uses an unsupported dtype."""


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live: file, absolute byte offset, dtype and shape."""

    name: str
    path: Path
    offset: int
    dtype: str  # safetensors dtype name (F32, F16, BF16, F64)
    shape: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elems(self) -> int:
        n = 1
        for dim in self.shape[1:]:
            n *= dim
        return n


def _read_header(path: Path) -> list[TensorRef]:
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise SafetensorsError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: implausible header length {header_len}")
        header = json.loads(fh.read(header_len))
    data_start = 8 + header_len
    size = path.stat().st_size
    refs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        begin, end = info["data_offsets"]
        shape = tuple(int(d) for d in info["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][0].itemsize
        if end - begin != expected or data_start + end > size:
            raise SafetensorsError(f"{path}: tensor {name} is truncated or inconsistent")
        refs.append(TensorRef(name, path, data_start + begin, dtype, shape))
    return refs


def index_checkpoint(model_dir: Path) -> dict[str, TensorRef]:
    """Every tensor of a (possibly sharded) safetensors checkpoint in `model_dir`, by name."""
    index_file = model_dir / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({model_dir / shard for shard in weight_map.values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SafetensorsError(f"{model_dir}: no *.safetensors files (is this a merged HF model?)")
    refs: dict[str, TensorRef] = {}
    for file in files:
        if not file.is_file():
            raise SafetensorsError(f"{model_dir}: shard {file.name} listed in the index is missing")
        for ref in _read_header(file):
            refs[ref.name] = ref
    return refs


def read_rows(ref: TensorRef, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of `ref` as float32 (F16 stays F16: widening it loses nothing)."""
    np_dtype, kind = _DTYPES[ref.dtype]
    count = (stop - start) * ref.row_elems
    buf = np.empty(count, dtype=np_dtype)
    with ref.path.open("rb", buffering=0) as fh:
        fh.seek(ref.offset + start * ref.row_elems * np_dtype.itemsize)
        view = buf.data.cast("B")
        got = 0
        while got < len(view):
            n = fh.readinto(view[got:])
            if not n:
                raise SafetensorsError(f"{ref.path}: unexpected end of file in {ref.name}")
            got += n
    shape = (stop - start, *ref.shape[1:]) if ref.shape else ()
    if kind == "bf16":
        # bf16 is the top half of an f32: shift the bits into place.
        return (buf.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if kind == "f64":
        return buf.astype(np.float32).reshape(shape)
    return buf.reshape(shape)


def iter_row_blocks(ref: TensorRef, max_elems: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges covering `ref`, each at most `max_elems` elements (≥ 1 row)."""
    rows_per_block = max(1, max_elems // max(1, ref.row_elems))
    for start in range(0, ref.n_rows, rows_per_block):
        yield start, min(ref.n_rows, start + rows_per_block)
