"""What the parse pool's forkserver imports once before forking workers: every parser, warm.

The cleaners import their parsers lazily (docutils with its reader, writer, directives and
image support on the first RST page; a tree-sitter grammar on the first file of its
language), so that a command which never parses never pays for them. In a pool, each
forked worker would pay on its first file of each kind (~0.17 CPU-s for docutils alone,
more where no bytecode cache is written). Importing this module runs every cleaner and
chunker once on a few lines, so workers forked afterwards inherit all of it. Only the
pool's server imports it (`parse_pool._PRELOAD`).
"""

from __future__ import annotations

from pipeline.ingest.chunk import Sizes
from pipeline.ingest.code_ast import AST_LANGUAGES
from pipeline.ingest.parse import CODE_STRATEGIES, DOC_STRATEGIES, ChunkConfig, chunk_text

__all__ = ["warm_up"]

_RST = """Title
=====

A paragraph with a :ref:`role <target>` and a `link <https://example.org>`_.

.. image:: picture.png

.. note:: An admonition with |name|.

.. |name| replace:: a substitution

.. contents::

.. list-table::

   * - cell

.. code-block:: rust

   fn main() {}

* item

  ========  =====
  table     cell
  ========  =====
"""
_MARKDOWN = (
    "# Title\n\nA paragraph.\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n"
)
_CODE = {
    # the second has a body to skip: Rust is parsed without it by a parser of its own
    "rust": ["// SPDX-License-Identifier: Apache-2.0\nfn main() {}\n", "fn f() {\n    g(41);\n}\n"],
    "python": ["def main():\n    pass\n"],
    "c": ["int main(void) { return 0; }\n"],
    "cpp": ["int main() { return 0; }\n"],
}


def warm_up() -> None:
    """Clean and chunk a tiny sample of every language once (imports included)."""
    sizes = Sizes(20, 200, 20)
    config = ChunkConfig(DOC_STRATEGIES + CODE_STRATEGIES, sizes, sizes)
    chunk_text(_MARKDOWN, "markdown", "doc", config)
    chunk_text(_RST, "rst", "doc", config)
    for language in AST_LANGUAGES:
        for sample in _CODE[language]:
            chunk_text(sample, language, "code", config)


warm_up()
