"""Training test support: a tiny random Llama with SmolLM2's tokenizer, and seeded pairs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from state.db import Database
from state.pair_import import ImportedPair, import_pairs

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TOPICS = [
    ("DataFrame", "a lazily evaluated table built from a logical plan"),
    ("SessionContext", "the entry point that registers tables and runs SQL"),
    ("ListingTable", "a table provider over files in a directory"),
    ("physical plan", "the executable operator tree produced by the planner"),
    ("logical plan", "the tree of relational operators before optimisation"),
    ("RecordBatch", "a columnar batch of Arrow arrays with a schema"),
    ("UDF", "a user-defined scalar function registered with the context"),
    ("window function", "a function evaluated over a frame of neighbouring rows"),
    ("optimizer rule", "a rewrite applied to the logical plan"),
    ("partition", "a slice of the input processed by one task"),
    ("Parquet", "a columnar file format with row groups and statistics"),
    ("CSV reader", "a source that infers a schema and parses delimited text"),
    ("ExecutionPlan", "the trait every physical operator implements"),
    ("TableProvider", "the trait that exposes a table to the planner"),
    ("Expr", "a node of a logical expression tree"),
]


def build_tiny_model(root: Path) -> Path:
    """A 1-layer random Llama (hidden 32) with SmolLM2's tokenizer and chat template, saved as an
    HF directory under `root` (built once per session; reused when present)."""
    out = root / "tiny-llama"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.train.base_model import bundled_smollm2, describe_base_model, load_tokenizer

    tokenizer = load_tokenizer(describe_base_model(str(bundled_smollm2())))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    tmp = root / "tiny-llama.part"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def qa_pairs(n: int) -> list[tuple[str, str]]:
    """`n` distinct, short question/answer pairs about DataFusion terms."""
    pairs = []
    for i in range(n):
        term, meaning = _TOPICS[i % len(_TOPICS)]
        pairs.append(
            (
                f"In DataFusion, what is a {term}? (variant {i})",
                f"A {term} is {meaning}. See section {i} of the guide.",
            )
        )
    return pairs


async def insert_pairs(
    db: Database, pairs: list[tuple[str, str]], *, retired: bool = False, repo: str = "demo"
) -> list[int]:
    """Store pairs as if generated (`state.pair_import`: repo, chunk and job rows too)."""
    rows = [
        ImportedPair(
            chunk_id="chunk-" + hashlib.sha256(f"{q}|{a}|{retired}".encode()).hexdigest(),
            question=q,
            answer=a,
            path="docs/a.md",
        )
        for q, a in pairs
    ]
    return await import_pairs(
        db, rows, repo=repo, root=f"/src/{repo}", model="fake", prompt_version="v1", retired=retired
    )
