"""GGUF export: metadata, tensors, and the two independent loaders (transformers, llama.cpp)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import ship_models
from click.testing import CliRunner
from ship_models import LLAMA3_CHAT_TEMPLATE, save_smollm2_model, save_tiny_llama

from daemon.cli import main
from pipeline.ship import gguf_export
from pipeline.ship.gguf_export import ExportError, export_gguf, llama3_rope_factors

PROMPTS = ["Apache DataFusion is a query engine", "SELECT count(*) FROM t", "def main():"]


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ship_models.smollm2_tokenizer_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_smol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ship_models.tiny_smol_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    return ship_models.tiny_llama3_dir(tmp_path_factory, corpus_dir)


def _hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _reader_value(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_llama3_rope_factors_match_transformers_llama3_rope(tiny_llama3: Path) -> None:
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(tiny_llama3)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    hp = gguf_export.LlamaHParams.from_model_dir(tiny_llama3)
    base = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float32) / hp.head_dim))
    # llama.cpp divides each base frequency by its factor, exactly as transformers scales it.
    np.testing.assert_allclose(base / llama3_rope_factors(hp), scaled.numpy(), rtol=1e-5)


def test_llama3_style_export_has_complete_tokenizer_metadata(
    tiny_llama3: Path, tmp_path: Path
) -> None:
    out = export_gguf(tiny_llama3, tmp_path / "m.gguf", "f16")
    reader = gguf.GGUFReader(out)
    tokens = _reader_value(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    ids = {t: i for i, t in enumerate(tokens)}
    assert _reader_value(reader, "tokenizer.ggml.model") == "gpt2"
    assert _reader_value(reader, "tokenizer.ggml.pre") == "llama-bpe"
    assert _reader_value(reader, "tokenizer.ggml.bos_token_id") == ids["<|begin_of_text|>"]
    assert _reader_value(reader, "tokenizer.ggml.eos_token_id") == ids["<|eot_id|>"]
    assert _reader_value(reader, "tokenizer.ggml.eot_token_id") == ids["<|eot_id|>"]
    assert _reader_value(reader, "tokenizer.ggml.padding_token_id") == ids["<|end_of_text|>"]
    assert _reader_value(reader, "tokenizer.ggml.add_bos_token") is True
    assert _reader_value(reader, "tokenizer.chat_template") == LLAMA3_CHAT_TEMPLATE
    types = _reader_value(reader, "tokenizer.ggml.token_type")
    assert isinstance(types, list)
    assert types[ids["<|eot_id|>"]] == gguf.TokenType.CONTROL
    assert types[ids["Ġ"]] == gguf.TokenType.NORMAL
    merges = _reader_value(reader, "tokenizer.ggml.merges")
    assert isinstance(merges, list)
    assert len(merges) > 100
    names = {t.name: t for t in reader.tensors}
    assert "rope_freqs.weight" in names
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_smollm2_tokenizer_metadata_matches_the_original_gguf(
    tiny_smol: Path, tmp_path: Path
) -> None:
    from ship_models import SMOLLM2_GGUF, smollm2_dir

    ours = gguf.GGUFReader(export_gguf(tiny_smol, tmp_path / "m.gguf", "f16"))
    original = gguf.GGUFReader(smollm2_dir() / SMOLLM2_GGUF)
    for key in (
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ):
        assert _reader_value(ours, key) == _reader_value(original, key), key
    assert _reader_value(ours, "tokenizer.ggml.eot_token_id") == 2  # <|im_end|>


@pytest.mark.parametrize(("out_type", "atol"), [("f16", 0.02), ("bf16", 0.1), ("q8_0", 0.1)])
def test_export_reloads_in_transformers_with_the_same_logits(
    tiny_smol: Path, tmp_path: Path, out_type: str, atol: float
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = export_gguf(tiny_smol, tmp_path / f"m-{out_type}.gguf", out_type)  # type: ignore[arg-type]
    ids = [504, 3575, 282, 4649, 314, 1604, 3987, 46477]
    expected = _hf_logits(tiny_smol, ids)
    reloaded = AutoModelForCausalLM.from_pretrained(
        out.parent, gguf_file=out.name, dtype=torch.float32
    )
    with torch.no_grad():
        got = reloaded(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(got, expected, atol=atol)


def test_llama3_rope_model_reloads_in_transformers_with_the_same_logits(
    tiny_llama3: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = export_gguf(tiny_llama3, tmp_path / "m.gguf", "f16")
    ids = list(range(5, 60, 3))
    expected = _hf_logits(tiny_llama3, ids)
    # transformers' GGUF reader drops rope scaling; hand it the original config so this
    # checks the weights (incl. un-permuting Q/K); llama.cpp checks rope_freqs below.
    config = AutoConfig.from_pretrained(tiny_llama3)
    reloaded = AutoModelForCausalLM.from_pretrained(
        out.parent, gguf_file=out.name, config=config, dtype=torch.float32
    )
    with torch.no_grad():
        got = reloaded(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(got, expected, atol=0.02)


def _llamacpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def test_llamacpp_runs_the_llama3_style_export_like_transformers(
    tiny_llama3: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    out = export_gguf(tiny_llama3, tmp_path / "m.gguf", "f16")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, logits_all=True, verbose=False)
    for prompt in PROMPTS:
        hf_ids = tokenizer(prompt).input_ids
        assert llm.tokenize(prompt.encode(), add_bos=True, special=False) == hf_ids
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is a logical plan?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tokenizer(chat, add_special_tokens=False).input_ids
    assert llm.tokenize(chat.encode(), add_bos=False, special=True) == ids
    expected = _hf_logits(tiny_llama3, ids)
    got = _llamacpp_logits(out, ids)
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.9


def test_row_block_size_does_not_change_the_file(
    tiny_smol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = export_gguf(tiny_smol, tmp_path / "whole.gguf", "q8_0").read_bytes()
    monkeypatch.setattr(gguf_export, "_BLOCK_ELEMS", 1000)  # many blocks per tensor
    blocked = export_gguf(tiny_smol, tmp_path / "blocked.gguf", "q8_0").read_bytes()
    assert blocked == whole


def test_bf16_checkpoint_is_copied_bit_exactly_to_bf16(
    smollm2_tokenizer_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    src = tmp_path / "bf16"
    save_tiny_llama(src, smollm2_tokenizer_dir, vocab_size=49152)
    model = AutoModelForCausalLM.from_pretrained(src).to(torch.bfloat16)
    model.save_pretrained(src)
    expected = model.model.embed_tokens.weight.view(torch.int16).numpy().view(np.uint8)
    reader = gguf.GGUFReader(export_gguf(src, tmp_path / "m.gguf", "bf16"))
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert embd.tensor_type == gguf.GGMLQuantizationType.BF16
    assert np.array_equal(np.asarray(embd.data).view(np.uint8).ravel(), expected.ravel())


def test_truncated_checkpoint_fails_and_leaves_no_file(tiny_smol: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_smol.iterdir():
        data = item.read_bytes()
        (broken / item.name).write_bytes(
            data[: len(data) // 2] if item.suffix == ".safetensors" else data
        )
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ValueError, match="truncated"):
        export_gguf(broken, out, "f16")
    assert not out.exists()
    assert not list(out.parent.glob("*.tmp"))  # the partial file was removed


def test_non_llama_and_unmerged_models_are_rejected(tiny_smol: Path, tmp_path: Path) -> None:
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="Llama-family"):
        export_gguf(other, tmp_path / "a.gguf", "f16")

    lora = tmp_path / "lora"
    lora.mkdir()
    for item in tiny_smol.iterdir():
        (lora / item.name).write_bytes(item.read_bytes())
    header = json.dumps(
        {
            "model.layers.0.self_attn.q_proj.lora_A.weight": {
                "dtype": "F32",
                "shape": [2, 2],
                "data_offsets": [0, 16],
            }
        }
    ).encode()
    (lora / "adapter.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(ExportError, match="no GGUF name"):
        export_gguf(lora, tmp_path / "b.gguf", "f16")


def test_gguf_command_exports_and_reports_errors(tiny_smol: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.gguf"
    result = runner.invoke(main, ["gguf", str(tiny_smol), str(out), "--type", "q8_0"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "q8_0" in result.output
    result = runner.invoke(main, ["gguf", str(tmp_path), str(tmp_path / "x.gguf")])
    assert result.exit_code == 1
    assert "config.json" in result.output
    result = runner.invoke(main, ["gguf", str(tiny_smol), str(out), "--type", "q4_k"])
    assert result.exit_code == 2


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("smollm2-hf")
    save_smollm2_model(path)
    return path


@pytest.mark.slow
def test_smollm2_f16_export_generates_the_same_greedy_text_in_llamacpp(
    smollm2_hf: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    out = export_gguf(smollm2_hf, tmp_path / "smollm2-f16.gguf", "f16")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf)
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, verbose=False)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            hf = model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :]
        cpp_ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        assert cpp_ids == ids[0].tolist()
        generated = []
        for token in llm.generate(cpp_ids, top_k=1, temp=0.0, reset=True):
            generated.append(token)
            if len(generated) == 16:
                break
        assert generated == hf.tolist(), prompt
