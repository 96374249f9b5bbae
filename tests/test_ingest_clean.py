"""Cleaning on the real corpus: no license, no markup residue, line spans that point home."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.ingest.chunk import Sizes
from pipeline.ingest.clean import clean, clean_rst, license_header_end
from pipeline.ingest.parse import ChunkConfig, chunk_text

CONFIG = ChunkConfig(
    ("heading", "paragraph", "fixed"), Sizes(200, 1500, 150), Sizes(200, 2000, 200)
)
# Markup that must not survive cleaning (outside code blocks).
RESIDUE = [
    re.compile(r"\]\((https?://|\.{0,2}/|#)"),  # [text](target)
    re.compile(r"^#{2,6} ", re.M),  # ATX heading marks
    re.compile(r"<!--"),  # HTML comments
    re.compile(r"\*\*[^*\n]+\*\*"),  # strong emphasis
    re.compile(r"^```", re.M),  # fences
    re.compile(r"`[^`\n]+`_"),  # RST links
    re.compile(r"^\.\. [a-z-]+::", re.M),  # RST directives
    re.compile(r":(ref|doc|class|func):`"),  # roles
    re.compile(r"^\{[a-z-]+\}", re.M),  # MyST directive fences
]


def _content_words(line: str) -> list[str]:
    """Words of a cleaned line, minus table header names ("Header: value; ...")."""
    values = re.sub(r"(^|; )[^;:]{1,40}: ", " ", line)
    return re.findall(r"[A-Za-z]{5,}", values)


def _plain(source: str) -> str:
    """A source line with inline markup characters removed (for word lookups)."""
    return re.sub(r"[`*_\\\[\]]", "", source)


def _docs(corpus_dir: Path) -> list[Path]:
    return sorted([*corpus_dir.rglob("*.md"), *corpus_dir.rglob("*.rst")])


def _language(path: Path) -> str:
    return "rst" if path.suffix == ".rst" else "markdown"


def test_license_header_is_in_no_block(corpus_dir: Path) -> None:
    for path in _docs(corpus_dir):
        text = "\n".join(b.text for b in clean(path.read_text(), _language(path)))
        assert "Licensed to the Apache Software Foundation" not in text, path.name
        assert "WITHOUT WARRANTIES OR CONDITIONS" not in text, path.name


def test_no_markup_residue_in_prose_blocks(corpus_dir: Path) -> None:
    for path in _docs(corpus_dir):
        for block in clean(path.read_text(), _language(path)):
            if block.kind == "code":
                continue
            for pattern in RESIDUE:
                assert not pattern.search(block.text), (path.name, block.line_nos[0], block.text)


def test_every_cleaned_line_points_at_a_source_line_holding_its_words(corpus_dir: Path) -> None:
    checked = 0
    for path in _docs(corpus_dir):
        source = path.read_text().split("\n")
        for block in clean(path.read_text(), _language(path)):
            for line, no in zip(block.lines, block.line_nos, strict=True):
                words = _content_words(line)
                if not words:
                    continue
                assert 1 <= no <= len(source)
                # Markup can split words; the longest word is still on the source line.
                longest = max(words, key=len)
                assert longest in _plain(source[no - 1]), (path.name, no, line, source[no - 1])
                checked += 1
    assert checked > 5000


def test_chunk_spans_cover_their_text(corpus_dir: Path) -> None:
    for path in _docs(corpus_dir)[:20]:
        source = path.read_text()
        lines = source.split("\n")
        rows, _ = chunk_text(source, _language(path), "doc", CONFIG)
        for strategy, _o, _id, text, start, end, _h, _s in rows:
            span = _plain("\n".join(lines[start - 1 : end]))
            first = _content_words(text.split("\n")[0])
            last = _content_words(text.split("\n")[-1])
            if first:
                assert first[0] in span, (path.name, strategy, start, end)
            if last:
                assert last[-1] in span, (path.name, strategy, start, end)


def test_rst_drops_directives_comments_and_link_targets() -> None:
    text = """.. comment: Licensed to the Apache Software Foundation

Title
=====

See `Arrow <https://arrow.apache.org>`_ and :doc:`guide`.

.. toctree::
   :maxdepth: 1

   user-guide/intro

.. _target: https://example.com

* item one
* item two

::

   let x = 1;
"""
    blocks = clean_rst(text)
    kinds = [b.kind for b in blocks]
    assert kinds == ["heading", "paragraph", "list_item", "list_item", "code"]
    assert blocks[1].text == "See Arrow and guide."
    assert blocks[1].line_nos == [6]
    assert blocks[4].lines == ["let x = 1;"]
    assert blocks[4].line_nos == [20]


def test_markdown_tables_keep_cells_with_headers() -> None:
    text = "| Key | Default |\n|---|---|\n| `a.b` | **8192** |\n"
    blocks = clean(text, "markdown")
    assert [(b.kind, b.text, b.line_nos) for b in blocks] == [
        ("table_row", "Key: a.b; Default: 8192", [3])
    ]


def test_myst_admonition_keeps_content_and_drops_options() -> None:
    text = "# T\n\n```{note}\n:class: dropdown\nBe **careful** here.\n```\n\n```{toctree}\nx\n```\n"
    blocks = clean(text, "markdown")
    assert [(b.kind, b.text, b.line_nos) for b in blocks] == [
        ("heading", "T", [1]),
        ("paragraph", "Be careful here.", [5]),
    ]


def test_code_license_header_detection() -> None:
    rust = ["// Licensed to the Apache Software Foundation (ASF)", "// more", "", "fn main() {}"]
    assert license_header_end(rust) == 3
    python = ["#!/usr/bin/env python", "# SPDX-License-Identifier: Apache-2.0", "import os"]
    assert license_header_end(python) == 2
    c = ["/*", " * Licensed under the Apache License", " */", "#include <x.h>"]
    assert license_header_end(c) == 3
    assert license_header_end(["// just a comment", "fn x() {}"]) == 0
