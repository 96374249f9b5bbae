"""`doctune faq`: question/answer pairs the docs write themselves, with provenance."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from daemon.cli import main
from pipeline.evaluation.faq import harvest_text

MD = """# Guide

## What is a DataFrame?

A DataFrame is a lazily evaluated table built from a [logical plan](plan.md).
It runs when collected.

```rust
let df = ctx.read_csv("a.csv").await?;
```

## How to register a CSV file

Call `register_csv` on the [SessionContext] with a name and a path.

[SessionContext]: https://docs.rs/datafusion

## Installation

Use cargo.

**Does DataFusion need a server?** No, it is a library embedded in your process.

**Is it thread safe?**

Yes: a SessionContext can be shared between tasks.

Can I use SQL?
: Yes, every DataFrame operation has a SQL equivalent.
"""

RST = """Frequently asked
================

Why is my query slow?
---------------------

.. note:: read this first

Check that statistics are collected; without them the planner cannot pick a join order.

What file formats are supported?
   Parquet, CSV, JSON and Avro, each through its own listing table format.

Other
-----

Plain text.
"""


def test_markdown_patterns_with_lines() -> None:
    pairs = {p["question"]: p for p in harvest_text(MD, rst=False)}
    assert set(pairs) == {
        "What is a DataFrame?",
        "How do I register a CSV file?",
        "Does DataFusion need a server?",
        "Is it thread safe?",
        "Can I use SQL?",
    }
    df = pairs["What is a DataFrame?"]
    assert df["answer"] == (
        "A DataFrame is a lazily evaluated table built from a logical plan. It runs when collected."
    )
    assert (df["start_line"], df["end_line"], df["kind"]) == (3, 6, "question_heading")
    howto = pairs["How do I register a CSV file?"]
    assert howto["answer"] == "Call register_csv on the SessionContext with a name and a path."
    assert howto["kind"] == "howto_heading"
    assert pairs["Does DataFusion need a server?"]["answer"].startswith("No, it is a library")
    assert pairs["Is it thread safe?"]["answer"].startswith("Yes: a SessionContext")
    assert pairs["Can I use SQL?"]["kind"] == "definition"


def test_rst_titles_and_definition_lists() -> None:
    pairs = {p["question"]: p for p in harvest_text(RST, rst=True)}
    assert set(pairs) == {"Why is my query slow?", "What file formats are supported?"}
    slow = pairs["Why is my query slow?"]
    assert slow["answer"].startswith("Check that statistics are collected")
    assert slow["start_line"] == 4
    formats = pairs["What file formats are supported?"]
    assert formats["answer"].startswith("Parquet, CSV, JSON and Avro")
    assert formats["kind"] == "definition"


def test_cli_writes_an_eval_set_with_provenance(tmp_path: Path) -> None:
    docs = tmp_path / "sources" / "demo" / "docs"
    docs.mkdir(parents=True)
    (docs / "guide.md").write_text(MD)
    (docs / "faq.rst").write_text(RST)
    config = tmp_path / "doctune.toml"
    config.write_text('[sources]\ndir = "sources"\ndocs = ["docs/*.md", "docs/*.rst"]\n')
    out = tmp_path / "faq.jsonl"
    result = CliRunner().invoke(main, ["--config", str(config), "faq", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "7 pairs from 2 files" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["source"] for r in rows} == {"docs/guide.md", "docs/faq.rst"}
    assert all(r["repo"] == "demo" and r["question"] and r["answer"] for r in rows)
    bad = CliRunner().invoke(main, ["--config", str(config), "faq", "--repo", "x", "--out", "o"])
    assert bad.exit_code == 2
    assert "unknown repository: x" in bad.output
