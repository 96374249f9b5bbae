"""Seeded generator of Rust-like source files (for tests and bench/bench_ingest.py)."""

from __future__ import annotations

import random

LICENSE = """// Licensed to the Apache Software Foundation (ASF) under one
// or more contributor license agreements.  See the NOTICE file
// distributed with this work for additional information
// regarding copyright ownership.  The ASF licenses this file
// to you under the Apache License, Version 2.0 (the
// "License"); you may not use this file except in compliance
// with the License.  You may obtain a copy of the License at
//
//   http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing,
// software distributed under the License is distributed on an
// "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
// KIND, either express or implied.  See the License for the
// specific language governing permissions and limitations
// under the License.
"""

_WORDS = [
    "plan",
    "schema",
    "batch",
    "column",
    "expr",
    "stream",
    "partition",
    "filter",
    "projection",
    "join",
    "window",
    "aggregate",
    "scalar",
    "optimizer",
    "rule",
    "table",
    "provider",
    "session",
    "context",
    "record",
    "array",
    "field",
    "statistics",
    "predicate",
    "cast",
    "literal",
    "physical",
    "logical",
    "execution",
    "metrics",
    "spill",
    "memory",
]


def _ident(rnd: random.Random, n: int = 2) -> str:
    return "_".join(rnd.choice(_WORDS) for _ in range(n))


def _camel(rnd: random.Random) -> str:
    return "".join(w.capitalize() for w in _ident(rnd, rnd.randint(1, 3)).split("_"))


def _fn(rnd: random.Random, indent: str) -> str:
    name = _ident(rnd, rnd.randint(1, 3))
    args = ", ".join(f"{_ident(rnd, 1)}: &{_camel(rnd)}" for _ in range(rnd.randint(0, 3)))
    body = []
    for _ in range(rnd.randint(2, 14)):
        kind = rnd.random()
        if kind < 0.5:
            body.append(f"{indent}    let {_ident(rnd)} = {_ident(rnd)}.{_ident(rnd, 1)}()?;")
        elif kind < 0.7:
            body.append(f"{indent}    // {' '.join(rnd.choice(_WORDS) for _ in range(8))}")
        elif kind < 0.85:
            body.append(f"{indent}    if {_ident(rnd)}.is_empty() {{")
            body.append(f"{indent}        return Ok(None);")
            body.append(f"{indent}    }}")
        else:
            body.append(f'{indent}    debug!("{_ident(rnd)} {{}}", {_ident(rnd, 1)});')
    doc = f"{indent}/// {' '.join(rnd.choice(_WORDS) for _ in range(10)).capitalize()}."
    return "\n".join(
        [
            doc,
            f"{indent}pub fn {name}({args}) -> Result<Option<{_camel(rnd)}>> {{",
            *body,
            f"{indent}    Ok(None)",
            f"{indent}}}",
        ]
    )


def rust_file(seed: int, target_chars: int = 15_000) -> str:
    """One Rust-like source file of about `target_chars` characters (deterministic)."""
    rnd = random.Random(seed)
    parts = [LICENSE, "use std::sync::Arc;", f"use crate::{_ident(rnd, 1)}::{_camel(rnd)};", ""]
    size = sum(len(p) for p in parts)
    while size < target_chars:
        roll = rnd.random()
        if roll < 0.35:
            item = _fn(rnd, "")
        elif roll < 0.55:
            name = _camel(rnd)
            fields = "\n".join(
                f"    pub {_ident(rnd)}: {_camel(rnd)}," for _ in range(rnd.randint(1, 8))
            )
            item = f"/// A {name}.\n#[derive(Debug, Clone)]\npub struct {name} {{\n{fields}\n}}"
        elif roll < 0.9:
            methods = "\n\n".join(_fn(rnd, "    ") for _ in range(rnd.randint(1, 6)))
            item = f"impl {_camel(rnd)} {{\n{methods}\n}}"
        else:
            variants = "\n".join(f"    {_camel(rnd)}," for _ in range(rnd.randint(2, 9)))
            item = f"pub enum {_camel(rnd)} {{\n{variants}\n}}"
        parts.append(item + "\n")
        size += len(item) + 2
    return "\n".join(parts)
