"""Export a merged Llama-family HF checkpoint (Llama 3.x, SmolLM2) to one GGUF file.

The reference is llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel`): the same tensor names,
types (1-D and norm tensors F32, the rest the requested type), Q/K rows permuted for
GGML's RoPE layout, the llama3 `rope_freqs` tensor, and complete tokenizer metadata.
Unlike the reference it never imports torch: tensors are streamed from the safetensors
files in row blocks straight into the output, so peak memory stays at one row block
(plus one Q/K matrix) however large the model is. The file is written next to the
destination and renamed into place, so a killed export never leaves a half-written GGUF.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import structlog

from pipeline.ship.gguf_vocab import add_vocab
from pipeline.ship.safetensors_io import TensorRef, index_checkpoint, iter_row_blocks, read_rows

__all__ = ["ExportError", "LlamaHParams", "OutType", "export_gguf"]

log = structlog.get_logger(__name__)

OutType = Literal["f16", "bf16", "q8_0"]
_FILE_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
_SUPPORTED_ARCHS = ("LlamaForCausalLM",)
_BLOCK_ELEMS = 4 * 1024 * 1024  # elements converted at a time (16 MiB as f32)
_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


class ExportError(ValueError):
    """The model directory cannot be exported (unsupported architecture, missing files...)."""


@dataclass(frozen=True)
class LlamaHParams:
    """The hyperparameters GGUF's llama architecture needs, read from config.json."""

    n_layers: int
    hidden: int
    ffn: int
    n_head: int
    n_head_kv: int
    head_dim: int
    explicit_head_dim: bool
    context_length: int
    rms_eps: float
    vocab_size: int
    rope_theta: float
    rope: dict[str, Any]
    tied_embeddings: bool
    name: str

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> LlamaHParams:
        config_file = model_dir / "config.json"
        if not config_file.is_file():
            raise ExportError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
        cfg = json.loads(config_file.read_text(encoding="utf-8"))
        archs = cfg.get("architectures") or []
        if cfg.get("model_type") != "llama" or (archs and archs[0] not in _SUPPORTED_ARCHS):
            raise ExportError(
                f"{model_dir}: model_type={cfg.get('model_type')!r} architectures={archs}; "
                "only Llama-family models (Llama 3.x, SmolLM2) can be exported"
            )
        rope = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
        n_head = int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim")
        return cls(
            n_layers=int(cfg["num_hidden_layers"]),
            hidden=int(cfg["hidden_size"]),
            ffn=int(cfg["intermediate_size"]),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            head_dim=int(head_dim or cfg["hidden_size"] // n_head),
            explicit_head_dim=head_dim is not None,
            context_length=int(cfg.get("max_position_embeddings", 2048)),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            vocab_size=int(cfg["vocab_size"]),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            rope=rope,
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            name=str(cfg.get("_name_or_path") or model_dir.name),
        )

    @property
    def rope_type(self) -> str:
        return str(self.rope.get("rope_type", self.rope.get("type", "default"))).lower()


@dataclass(frozen=True)
class _Planned:
    """One output tensor: where it comes from and how it is encoded."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    source: TensorRef | None = None
    row_perm: np.ndarray | None = None  # Q/K rows reordered for GGML's RoPE
    data: np.ndarray | None = None  # generated tensors (rope_freqs)

    @property
    def nbytes(self) -> int:
        return math.prod(gguf.quant_shape_to_byte_shape(self.shape, self.qtype))


def llama3_rope_factors(hp: LlamaHParams) -> np.ndarray:
    """The per-frequency scaling factors llama.cpp reads from `rope_freqs` (llama3 rope)."""
    dim = hp.head_dim
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(hp.rope.get("factor", 8.0))
    low = float(hp.rope.get("low_freq_factor", 1.0))
    high = float(hp.rope.get("high_freq_factor", 4.0))
    old_ctx = float(hp.rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _rope_row_perm(n_rows: int, n_head: int) -> np.ndarray:
    """Row order turning HF's half-split rotary layout into GGML's interleaved one."""
    return np.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def _choose_qtype(
    gguf_name: str, shape: tuple[int, ...], want: gguf.GGMLQuantizationType
) -> gguf.GGMLQuantizationType:
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[want]
    if shape[-1] % block:
        log.warning("gguf.quant_fallback", tensor=gguf_name, cols=shape[-1], to="F16")
        return gguf.GGMLQuantizationType.F16
    return want


def _plan(
    hp: LlamaHParams, refs: dict[str, TensorRef], want: gguf.GGMLQuantizationType
) -> list[_Planned]:
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp.n_layers)
    planned: list[_Planned] = []
    if hp.rope_type == "llama3":
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        factors = llama3_rope_factors(hp)
        planned.append(_Planned(name, factors.shape, gguf.GGMLQuantizationType.F32, data=factors))
    for hf_name, ref in refs.items():
        if hf_name.endswith(_SKIPPED_SUFFIXES):
            continue
        if hf_name == "lm_head.weight" and hp.tied_embeddings:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(
                f"tensor {hf_name!r} has no GGUF name (unmerged LoRA weights or not a Llama model?)"
            )
        perm = None
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            perm = _rope_row_perm(ref.n_rows, hp.n_head)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            perm = _rope_row_perm(ref.n_rows, hp.n_head_kv)
        qtype = _choose_qtype(gguf_name, ref.shape, want)
        planned.append(_Planned(gguf_name, ref.shape, qtype, source=ref, row_perm=perm))
    if not any(p.name == "token_embd.weight" for p in planned):
        raise ExportError("checkpoint has no model.embed_tokens.weight")
    if not hp.tied_embeddings and not any(p.name == "output.weight" for p in planned):
        raise ExportError("checkpoint has untied embeddings but no lm_head.weight")
    return planned


def _encoded_blocks(item: _Planned) -> Iterator[np.ndarray]:
    """The tensor's GGUF bytes, a bounded row block at a time."""
    if item.data is not None:
        yield gguf.quants.quantize(item.data, item.qtype)
        return
    ref = item.source
    assert ref is not None
    if item.row_perm is not None:
        rows = read_rows(ref, 0, ref.n_rows)[item.row_perm]
        yield gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), item.qtype)
        return
    for start, stop in iter_row_blocks(ref, _BLOCK_ELEMS):
        rows = read_rows(ref, start, stop)
        if rows.dtype != np.float16 or item.qtype != gguf.GGMLQuantizationType.F16:
            rows = rows.astype(np.float32, copy=False)
        yield gguf.quants.quantize(rows, item.qtype)


def _add_hparams(writer: gguf.GGUFWriter, hp: LlamaHParams, file_type: int) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(hp.name)
    writer.add_block_count(hp.n_layers)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden)
    writer.add_feed_forward_length(hp.ffn)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    if hp.explicit_head_dim:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_file_type(file_type)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_rope_dimension_count(hp.head_dim)
    factor = hp.rope.get("factor")
    if hp.rope_type == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    elif hp.rope_type not in ("default", "llama3", "linear"):
        raise ExportError(f"rope type {hp.rope_type!r} is not supported for Llama export")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tensors(writer: gguf.GGUFWriter, planned: list[_Planned]) -> None:
    # GGUFWriter keeps every added tensor in memory until the end; instead we declare the
    # tensor infos up front and stream each tensor's bytes into the open file, using the
    # writer's own alignment so the offsets match the tensor-info table it wrote.
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    out = writer.fout[0]
    writer.write_padding(out, out.tell())
    for item in planned:
        written = 0
        for block in _encoded_blocks(item):
            block.tofile(out)
            written += block.nbytes
        if written != item.nbytes:
            raise ExportError(f"{item.name}: wrote {written} bytes, expected {item.nbytes}")
        writer.write_padding(out, written)


def export_gguf(model_dir: Path, out_path: Path, out_type: OutType) -> Path:
    """Convert the merged HF model in `model_dir` to `out_path` (f16, bf16 or q8_0)."""
    if out_type not in _FILE_TYPES:
        raise ExportError(f"unknown output type {out_type!r} (f16, bf16, q8_0)")
    model_dir, out_path = Path(model_dir), Path(out_path)
    file_type, want = _FILE_TYPES[out_type]
    hp = LlamaHParams.from_model_dir(model_dir)
    planned = _plan(hp, index_checkpoint(model_dir), want)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hparams(writer, hp, file_type)
        add_vocab(writer, model_dir, hp.vocab_size)
        for item in planned:
            writer.add_tensor_info(
                item.name, item.shape, np.dtype(np.float32), item.nbytes, raw_dtype=item.qtype
            )
        total, shared, expert, n_expert = writer.get_total_parameter_count()
        writer.add_size_label(gguf.size_label(total, shared, expert, n_expert))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        _write_tensors(writer, planned)
        assert writer.fout is not None
        writer.fout[0].flush()
        os.fsync(writer.fout[0].fileno())
        writer.close()
        os.replace(tmp_path, out_path)
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    log.info("gguf.exported", path=str(out_path), type=out_type, tensors=len(planned))
    return out_path
