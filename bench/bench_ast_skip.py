"""Rust items with and without the skipped block bodies: same spans? how much faster?

For every `.rs` file (the bench tree's generated crates by default, or a checkout given with
`--dir`), `code_ast.top_level_items` is run as shipped (block bodies the walk never enters are
left out of the parse, `pipeline/ingest/code_skip.py`) and with nothing skipped (a full
parse), at each `--max-chars`. Reported: files whose spans differ (must be 0), files that fell
back to the full parse, the share of bytes skipped, and the CPU time of both.

    uv run python bench/bench_ast_skip.py                          # 1,400 generated files
    uv run python bench/bench_ast_skip.py --dir ~/src/arrow-rs --dir ~/src/tokio
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.ingest import code_ast  # noqa: E402
from pipeline.ingest.clean import license_header_end  # noqa: E402
from pipeline.ingest.code_skip import skippable_ranges  # noqa: E402


def _sources(dirs: list[Path], files: int) -> list[bytes]:
    if not dirs:
        from tests.synthetic_rust import rust_file

        return [rust_file(seed, 15_000).encode() for seed in range(files)]
    return [p.read_bytes() for d in dirs for p in sorted(d.rglob("*.rs")) if p.is_file()]


def _items(
    sources: list[bytes], firsts: list[int], max_chars: int | None
) -> tuple[list[list[tuple[int, int]]], float]:
    started = time.process_time()
    pairs = zip(sources, firsts, strict=True)
    out = [code_ast.top_level_items(source, "rust", first, max_chars) for source, first in pairs]
    return out, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, action="append", default=[], help="a Rust checkout")
    parser.add_argument("--files", type=int, default=1400, help="generated files (no --dir)")
    parser.add_argument("--max-chars", type=int, action="append", help="default: 2000, 300")
    args = parser.parse_args()
    sources = _sources(args.dir, args.files)
    firsts = [license_header_end(s.decode("utf-8", "replace").split("\n")) + 1 for s in sources]
    total = sum(map(len, sources))
    print(f"{len(sources)} files, {total / 1e6:.1f} MB, python {platform.python_version()}")
    for max_chars in args.max_chars or [2000, 300]:
        with mock.patch.object(code_ast, "skippable_ranges", return_value=[]):
            full, full_s = _items(sources, firsts, max_chars)
        shipped, shipped_s = _items(sources, firsts, max_chars)
        differ = sum(1 for a, b in zip(full, shipped, strict=True) if a != b)
        skipped = [sum(e - s for s, e in skippable_ranges(src, max_chars)) for src in sources]
        fallback = sum(
            1 for src in sources if code_ast._parse_without_bodies(src, max_chars) is None
        )
        print(
            f"max_chars {max_chars}: spans differ in {differ} files; full parse "
            f"{full_s:.2f} CPU-s, shipped {shipped_s:.2f} CPU-s ({shipped_s / full_s - 1:+.0%}); "
            f"skipped {sum(skipped) / total:.0%} of bytes; {fallback} files parsed whole"
        )


if __name__ == "__main__":
    main()
