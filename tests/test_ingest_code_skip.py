"""Rust parsed without the block bodies the item walk never enters: the same items as a full
parse (pipeline/ingest/code_skip.py, code_ast.top_level_items)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest import code_ast
from pipeline.ingest.code_skip import skippable_ranges
from tests.synthetic_rust import rust_file


def _full_parse_items(
    monkeypatch: pytest.MonkeyPatch, source: bytes, max_chars: int | None
) -> list[tuple[int, int]]:
    """What `top_level_items` gives when nothing is skipped: a full parse's items."""
    with monkeypatch.context() as m:
        m.setattr(code_ast, "skippable_ranges", lambda source, max_chars: [])
        return code_ast.top_level_items(source, "rust", 1, max_chars)


def _has_error(source: bytes) -> bool:
    return bool(code_ast._parser("rust").parse(source).root_node.has_error)


# ------------------------------------------------------------------ generated Rust, any shape

_STATEMENTS = [
    "let x = compute(a, b)?;",
    "// a comment that ends with a brace {",
    "/* a block comment with } in it */",
    'let s = format!("{} {{", x);',
    "let c = '}';",
    "let open = '{';",
    'let r = r#"\n}\n{ raw, at column 0\n"#;',
    'let m = "a string\n}\nthat spans lines";',
    "x.iter().for_each(|v| { total += v; });",
    "match v { A => 1, B => { 2 } }",
]


def _literal(indent: str) -> str:
    return f"P {{\n{indent}    a: 1,\n{indent}    b: vec![2],\n{indent}}}"


@st.composite
def _block(draw: st.DrawFn, indent: str, depth: int) -> str:
    """A `{ … }` body: statements, nested blocks, closures, odd closing styles."""
    inner = indent + draw(st.sampled_from(["    ", "    ", "  ", "     ", "\t"]))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 5 if depth < 3 else 0))
        if kind == 0:
            stmt = draw(st.sampled_from(_STATEMENTS))
            lines.append(inner + stmt)
        elif kind == 1:
            lines.append(f"{inner}if ready {draw(_block(inner, depth + 1))} else {{ wait(); }}")
        elif kind == 2:  # a closure whose pattern's brace closes at an odd indentation
            lines.append(
                f"{inner}run(\n{inner}    |Data {{\n{inner}         a,\n{inner}     }}| "
                f"{draw(_block(inner + '    ', depth + 1))},\n{inner});"
            )
        elif kind == 3:
            lines.append(f"{inner}let v = {_literal(inner)};")
        elif kind == 4:
            lines.append(f"{inner}fn nested() {draw(_block(inner, depth + 1))}")
        else:
            lines.append(f"{inner}")
    if draw(st.booleans()) and lines:  # closed on its last line: `x }`
        return "{\n" + "\n".join(lines) + " }"
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


@st.composite
def _item(draw: st.DrawFn, indent: str, depth: int) -> str:
    kind = draw(st.integers(0, 6 if depth < 2 else 3))
    lead = draw(st.sampled_from(["", f"{indent}/// Docs.\n", f"{indent}#[inline]\n"]))
    if kind == 0:
        length = draw(st.sampled_from(["4", f"{{\n{indent}    4\n{indent}}}"]))  # `[u8; {…}]`
        body = draw(_block(indent, depth + 1))
        return f"{lead}{indent}pub fn f{depth}(a: u8) -> [u8; {length}] {body}"
    if kind == 1:
        fields = "".join(f"{indent}    f{i}: u8,\n" for i in range(draw(st.integers(0, 3))))
        return f"{lead}{indent}struct S {{\n{fields}{indent}}}"
    if kind == 2:
        return f"{indent}use crate::{{a, b}};"
    if kind == 3:
        return f"{indent}const C: P = {_literal(indent)};"
    if kind == 4:
        return f"{indent}macro_rules! m {{\n{indent}    ($x:expr) => {{ $x }};\n{indent}}}"
    members = [draw(_item(indent + "    ", depth + 1)) for _ in range(draw(st.integers(0, 4)))]
    head = "impl T" if kind == 5 else "mod inner"
    return f"{lead}{indent}{head} {{\n" + "\n\n".join(members) + f"\n{indent}}}"


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(_item("", 0), min_size=1, max_size=6),
    max_chars=st.sampled_from([40, 120, 400, 2000, None]),
    crlf=st.booleans(),
)
def test_skipping_bodies_gives_a_full_parses_items(
    items: list[str], max_chars: int | None, crlf: bool
) -> None:
    text = "\n\n".join(items) + "\n"
    source = (text.replace("\n", "\r\n") if crlf else text).encode()
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = _full_parse_items(monkeypatch, source, max_chars)
        monkeypatch.setattr(code_ast, "_MIN_SKIPPED", 0.0)  # whatever it skips, it parses so
        got = code_ast.top_level_items(source, "rust", 1, max_chars)
    if not _has_error(source):
        assert got == expected


def test_generated_files_are_mostly_skipped_and_keep_their_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for seed in range(12):
        source = rust_file(seed, 15_000).encode()
        skipped = sum(end - start for start, end in skippable_ranges(source, 2000))
        assert skipped > 0.5 * len(source)  # what makes the parse cheaper
        assert code_ast._parse_without_bodies(source, 2000) is not None
        expected = _full_parse_items(monkeypatch, source, 2000)
        assert code_ast.top_level_items(source, "rust", 1, 2000) == expected


# ------------------------------------------------------------------ the edges, one by one

# tokio's task/local.rs: the pattern's `}` is one column deeper than its `{` line, so the
# first `}` line at that indentation closes the closure's body instead. (The statements make
# `enter` big enough to be looked into.)
_PADDING = b"".join(b"        let value_%d = compute_something(%d)?;\n" % (i, i) for i in range(30))
_ODD_CLOSURE = (
    b"""\
impl LocalSet {
    pub fn enter(&self) -> Guard {
"""
    + _PADDING
    + b"""\
        CURRENT.with(
            |LocalData {
                 ctx,
                 ..
             }| {
                let old = ctx.replace(Some(self.context.clone()));
                Guard(old)
            },
        )
    }

    pub fn spawn(&self) {
        spawn_it();
    }
}
"""
)


def test_a_wrong_guess_falls_back_to_the_full_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    starts = [_ODD_CLOSURE[start - 6 : start] for start, _ in skippable_ranges(_ODD_CLOSURE, 40)]
    assert b"Data {" in starts, "the guess this test is about is no longer made"
    assert code_ast._parse_without_bodies(_ODD_CLOSURE, 40) is None
    expected = _full_parse_items(monkeypatch, _ODD_CLOSURE, 40)
    assert code_ast.top_level_items(_ODD_CLOSURE, "rust", 1, 40) == expected


def test_braces_in_strings_and_comments_open_no_block(monkeypatch: pytest.MonkeyPatch) -> None:
    source = b"""\
fn f() {
    let a = "x {
    y";
    // see {
    let b = "a string {
        that looks like a block
    }";
    if ok {
        go();
    }
}
"""
    # fn f's body holds more `{` than `}`: it is not skipped, only the `if` block is.
    if_body = source.index(b"ok {") + 4
    assert skippable_ranges(source, None) == [(if_body, source.index(b"}", if_body))]
    expected = _full_parse_items(monkeypatch, source, None)
    assert code_ast.top_level_items(source, "rust", 1, None) == expected


def test_an_error_inside_a_skipped_body_does_not_merge_items() -> None:
    """The one deliberate difference (CHUNKER_VERSION 2026-12-02.1): a body the walk never
    enters is not parsed, so a syntax error inside it cannot change the items around it."""
    broken = b"fn a() {\n    let x = ;\n    let y = (1;\n}\n\nfn b() {\n    b();\n}\n"
    fixed = broken.replace(b"let x = ;", b"let x = 0;").replace(b"(1;", b"(1);")
    assert _has_error(broken)
    assert not _has_error(fixed)
    items = code_ast.top_level_items(broken, "rust", 1, 2000)
    assert items == code_ast.top_level_items(fixed, "rust", 1, 2000) == [(1, 4), (6, 8)]


@pytest.mark.parametrize(
    ("source", "max_chars"),
    [
        # `a`'s body closes on its last line: the first `}` line at its indentation is `b`'s
        (b"pub fn a() {\n    x(); }\n\npub fn b() {\n    y();\n}\n", None),
        # the array length's block closes on `}] {`: `g` starts before it, and `g` is big
        (b"fn g() -> [u8; {\n    4\n}] {\n    one();\n    two();\n}\n", 30),
    ],
)
def test_a_block_that_only_looks_closed_is_not_skipped(
    monkeypatch: pytest.MonkeyPatch, source: bytes, max_chars: int | None
) -> None:
    assert not _has_error(source)
    expected = _full_parse_items(monkeypatch, source, max_chars)
    monkeypatch.setattr(code_ast, "_MIN_SKIPPED", 0.0)
    assert code_ast.top_level_items(source, "rust", 1, max_chars) == expected
