"""Tokenizer metadata for GGUF: GPT-2-style BPE vocab, token types, pre-tokenizer, special ids.

Follows llama.cpp's reference converter (`convert_hf_to_gguf.py`: `get_vocab_base`,
`get_vocab_base_pre`, `_set_vocab_gpt2`) but reads `tokenizer.json` with the `tokenizers`
library instead of transformers, so the export never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gguf
from tokenizers import Tokenizer

__all__ = ["VocabError", "add_vocab", "detect_pre_tokenizer", "tokenizer_adds_bos"]

# The text llama.cpp hashes to fingerprint a BPE pre-tokenizer (convert_hf_to_gguf_update.py).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# Fingerprints of the Llama-family tokenizers doctune ships (values from llama.cpp's table).
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3.x
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM/2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
LLAMA3_SPLIT_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
# Turn terminators, in the order we prefer them as the end-of-turn (EOT) token.
EOT_CANDIDATES = ("<|eot_id|>", "<|im_end|>", "<|end_of_turn|>", "<end_of_turn>", "<|end|>")


class VocabError(ValueError):
    """The tokenizer cannot be expressed as a GGUF GPT-2 BPE vocabulary."""


def _looks_special(token: str) -> bool:
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def detect_pre_tokenizer(tokenizer: Tokenizer, tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name: by fingerprint first, else by the declared structure."""
    for with_specials in (True, False):
        ids = tokenizer.encode(CHECK_TEXT, add_special_tokens=with_specials).ids
        digest = hashlib.sha256(str(ids).encode()).hexdigest()
        if digest in KNOWN_PRE_HASHES:
            return KNOWN_PRE_HASHES[digest]
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    for p in parts:
        if p.get("type") == "Split" and p.get("pattern", {}).get("Regex") == LLAMA3_SPLIT_REGEX:
            return "llama-bpe"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise VocabError(
        f"unrecognised BPE pre-tokenizer {json.dumps(pre)[:200]} (fingerprint {digest}); "
        "doctune exports Llama 3.x and SmolLM2 tokenizers"
    )


def _load_tokenizer(model_dir: Path) -> tuple[Tokenizer, dict[str, Any]]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise VocabError(f"{model_dir}: no tokenizer.json (save the tokenizer with the model)")
    tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    decoder = tokenizer_json.get("decoder") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or decoder.get("type") != "ByteLevel"
    ):
        raise VocabError(
            f"{path}: not a GPT-2-style byte-level BPE tokenizer (model {model.get('type')}, "
            f"decoder {decoder.get('type')}); Llama 3.x / SmolLM2 tokenizers are supported"
        )
    return Tokenizer.from_file(str(path)), tokenizer_json


def _tokens_and_types(
    tokenizer: Tokenizer, tokenizer_json: dict[str, Any], vocab_size: int
) -> tuple[list[str], list[int]]:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= vocab_size:
        raise VocabError(
            f"tokenizer has ids up to {max(vocab.values())} but vocab_size={vocab_size}"
        )
    reverse = {idx: text for text, idx in vocab.items()}
    added = {a["id"]: a for a in tokenizer_json.get("added_tokens", [])}
    tokens: list[str] = []
    types: list[int] = []
    for idx in range(vocab_size):
        if idx not in reverse:
            tokens.append(f"[PAD{idx}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = reverse[idx]
        if idx in added:
            entry = added[idx]
            if not entry.get("normalized", True):
                # llama.cpp expects added tokens pre-normalised (same as the reference).
                ids = tokenizer.encode(text, add_special_tokens=False).ids
                text = tokenizer.decode(ids, skip_special_tokens=False)
            if entry.get("special") or _looks_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def _adds_token(tokenizer: Tokenizer, token_id: int | None, where: int) -> bool:
    """Whether encoding with special tokens puts `token_id` at `where` (0 = start, -1 = end)."""
    if token_id is None:
        return False
    with_specials = tokenizer.encode("doctune", add_special_tokens=True).ids
    plain = tokenizer.encode("doctune", add_special_tokens=False).ids
    return len(with_specials) > len(plain) and with_specials[where] == token_id


def add_vocab(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> dict[str, int]:
    """Write the complete tokenizer metadata; returns the special token ids written."""
    tokenizer, tokenizer_json = _load_tokenizer(model_dir)
    tokens, types = _tokens_and_types(tokenizer, tokenizer_json, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(detect_pre_tokenizer(tokenizer, tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise VocabError(f"{model_dir}: tokenizer.json has no BPE merges")
    if "eot" not in special.special_token_ids:
        index = {text: i for i, text in enumerate(tokens)}
        for candidate in EOT_CANDIDATES:
            if candidate in index and types[index[candidate]] == gguf.TokenType.CONTROL:
                special.special_token_ids["eot"] = index[candidate]
                break
    # Decide BOS/EOS insertion from what the tokenizer actually does, so llama.cpp and
    # Ollama tokenize prompts exactly as training did (no guessing from the vocab size).
    special.add_special_token["bos"] = _adds_token(
        tokenizer, special.special_token_ids.get("bos"), 0
    )
    special.add_special_token["eos"] = _adds_token(
        tokenizer, special.special_token_ids.get("eos"), -1
    )
    special.add_to_gguf(writer, quiet=True)
    config_file = model_dir / "tokenizer_config.json"
    if config_file.is_file():
        prefix = json.loads(config_file.read_text(encoding="utf-8")).get("add_prefix_space")
        if isinstance(prefix, bool):
            writer.add_add_space_prefix(prefix)
    return dict(special.special_token_ids)


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the tokenizer prepends its BOS token by itself (llama.cpp's add_bos_token)."""
    tokenizer, _ = _load_tokenizer(model_dir)
    special = gguf.SpecialVocab(model_dir, load_merges=False)
    return _adds_token(tokenizer, special.special_token_ids.get("bos"), 0)
