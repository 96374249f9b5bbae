"""Each answer passage is told its own section: ingest records the sections that start inside a
chunk, a claimed job carries them, the prompt's `Section:` line and the off_topic check use the
passage's section, not the one its chunk starts in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gen_helpers import gen_settings

from pipeline.generate.backtranslate import Passage, answer_passages, build_messages
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.prompt import prompt_version_for
from pipeline.generate.questions import (
    check_question,
    first_question,
    section_words,
    validate_questions,
)
from pipeline.generate.sections import passage_sections
from pipeline.generate.validate import DuplicateIndex, Rejection
from pipeline.ingest import reconcile as reconcile_module
from pipeline.ingest.blocks import Block
from pipeline.ingest.clean_markdown import clean_markdown
from pipeline.ingest.reconcile import reconcile
from pipeline.settings import GeneratorSettings, PathsSettings, Settings, SourcesSettings
from state.db import Database, open_db
from state.job_claims import ClaimedJob, claim_jobs

pytestmark = pytest.mark.anyio
SQL_PAGE = "docs/source/user-guide/sql/scalar_functions.md"
ABS_ARGUMENTS = ("Scalar Functions", "Math Functions", "abs", "Arguments")
ARGUMENT_SPAN = (
    "numeric_expression: Numeric expression to operate on. Can be a constant, column, or "
    "function, and any combination of operators."
)


def _settings(tmp_path: Path) -> Settings:
    base = gen_settings(tmp_path, "http://127.0.0.1:9", mode="backtranslate")
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        sources=SourcesSettings(dir=tmp_path / "sources"),
        generator=base.generator,
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "data" / "doctune.sqlite3")
    yield database
    await database.close()


def _job(text: str, heading: str | None, sections: tuple[tuple[str, ...], ...]) -> ClaimedJob:
    return ClaimedJob(
        id=1, chunk_id="c1", claim_token="t", attempts=0, repairs=0, last_error=None,
        text=text, repo="datafusion", path="docs/functions.md", git_commit=None,
        language="markdown", kind="doc", strategy="paragraph", start_line=1, end_line=9,
        heading=heading, sections=sections,
    )  # fmt: skip


def _section_in_source(blocks: list[Block], job: ClaimedJob, passage: str) -> tuple[str, ...]:
    """The heading path of the first cleaned block of the job's source lines that holds the
    passage's first line (the same text recurs on the page, and within a chunk; a passage that
    is a whole chunk can start inside a code block)."""
    first_line = passage.splitlines()[0]
    found = [
        b
        for b in blocks
        if b.line_nos[-1] >= (job.start_line or 0)
        and b.line_nos[0] <= (job.end_line or 0)
        and first_line in b.lines
    ]
    return tuple(found[0].heading_path)


async def test_the_sql_reference_passages_are_told_the_section_they_sit_in(
    db: Database, tmp_path: Path, corpus_dir: Path
) -> None:
    """On the SQL reference a paragraph chunk often ends one function's section and starts the
    next. The passage's section is checked against the cleaned block it came from."""
    source = (corpus_dir / SQL_PAGE).read_text(encoding="utf-8")
    blocks = clean_markdown(source)
    page = tmp_path / "sources" / "datafusion" / SQL_PAGE
    page.parent.mkdir(parents=True)
    page.write_text(source, encoding="utf-8")
    settings = _settings(tmp_path)
    await reconcile(db, settings)
    gen = settings.generator
    assert await ensure_jobs(db, gen) > 200
    jobs = await claim_jobs(
        db, prompt_version=prompt_version_for(gen), model=gen.model, owner="t", limit=1000,
        lease_s=60,
    )  # fmt: skip
    moved = 0
    for job in jobs:
        for passage in answer_passages(job, 1, gen):
            assert passage.section == _section_in_source(blocks, job, passage.text)
            if " > ".join(passage.section) != job.heading:
                moved += 1
                prompt = build_messages(job, [passage])[1]["content"]
                assert f"Section: {' > '.join(passage.section)}\n" in prompt
                assert f"Section: {job.heading}\n" not in prompt
    assert moved > 50  # 138 of the page's 240 passages sit in a later section than their chunk


def test_a_passage_sits_in_the_last_section_that_starts_before_it() -> None:
    text = "abs\n\nReturns the absolute value.\n\nacos\n\nReturns the arc cosine.\n\nOrphan text."
    job = _job(
        text,
        "Functions > Math",
        (("Functions", "Math", "abs"), ("Functions", "Math", "acos"), ("Functions", "gone")),
    )
    passages = ["Returns the absolute value.", "Returns the arc cosine.", "Orphan text.", "?!"]
    assert passage_sections(job, passages) == [
        ("Functions", "Math", "abs"),
        ("Functions", "Math", "acos"),
        ("Functions", "Math", "acos"),  # "gone" has no title line here: the section before
        ("Functions", "Math"),  # not in the text: the chunk's first section
    ]
    assert passage_sections(_job(text, None, ()), passages[:1]) == [()]


def test_passages_in_different_sections_each_get_their_own_section_line() -> None:
    job = _job("abs\n\nfirst passage\n\nacos\n\nsecond passage", "F", (("F", "abs"),))
    passages = [Passage("first passage", ("F", "abs")), Passage("second passage", ("F", "acos"))]
    prompt = build_messages(job, passages)[1]["content"]
    assert prompt.index("Passage 1:\nSection: F > abs\n") < prompt.index(
        "Passage 2:\nSection: F > acos\n"
    )
    same = build_messages(job, [Passage("first passage", ("F", "abs"))] * 2)[1]["content"]
    assert same.count("Section: F > abs") == 1


def test_the_file_is_named_only_for_a_passage_without_a_section() -> None:
    """A section's heading path names the page and the topic; the path's file name is words
    SmolLM2 asks about instead ("How to use the datafusion.explain-usage.json file")."""
    job = _job("abs\n\nfirst passage\n\nsecond passage", "F", (("F", "abs"),))
    in_section = build_messages(job, [Passage("first passage", ("F", "abs"))])[1]["content"]
    assert "Section: F > abs\n" in in_section
    assert "docs/functions.md" not in in_section
    mixed = [Passage("first passage", ("F", "abs")), Passage("second passage", ())]
    assert "docs/functions.md" not in build_messages(job, mixed)[1]["content"]
    loose = build_messages(_job("first passage", None, ()), [Passage("first passage")])
    assert "File: docs/functions.md\n" in loose[1]["content"]
    assert "Section:" not in loose[1]["content"]


def test_a_question_that_names_the_passages_section_is_on_topic() -> None:
    gen = GeneratorSettings(mode="backtranslate")
    check_question("What are the arguments of abs?", ARGUMENT_SPAN, gen, ABS_ARGUMENTS)
    for section in ((), ("Scalar Functions", "Math Functions", "acos", "Arguments")):
        with pytest.raises(Rejection) as caught:
            check_question("What does abs return?", ARGUMENT_SPAN, gen, section)
        assert caught.value.reason == "off_topic"
    # the page's title is every passage's: naming it says nothing about this one
    assert section_words(ABS_ARGUMENTS) == {"abs", "argument"}
    assert section_words(("Scalar Functions", "Math Functions", "abs")) == {"math", "abs"}
    assert section_words(("Configuration",)) == {"configuration"}
    # a function name is one word (snake_case), as the question writes it
    check_question(
        "What is the purpose of array_has_all()?",
        "Returns true if all elements of sub-array exist in array.",
        gen,
        ("Scalar Functions", "Array Functions", "array_has_all"),
    )


async def test_memberships_from_before_sections_get_them_on_the_chunker_upgrade(
    db: Database, tmp_path: Path, corpus_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written before `sections` existed: the CHUNKER_VERSION bump that came with
    the column re-chunks each file once and fills it, without a new chunk or a retired pair."""
    settings = Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        sources=SourcesSettings(dir=tmp_path / "sources"),
    )
    await reconcile(db, settings)
    filled = await db.scalar("SELECT COUNT(*) FROM memberships WHERE sections IS NOT NULL")
    assert filled > 1000
    async with db.write() as conn:
        await conn.execute("UPDATE memberships SET sections = NULL")
    monkeypatch.setattr(reconcile_module, "CHUNKER_VERSION", "a later version")
    upgraded = await reconcile(db, settings)
    assert (upgraded.chunks_added, upgraded.chunks_retired) == (0, 0)
    refilled = await db.scalar("SELECT COUNT(*) FROM memberships WHERE sections IS NOT NULL")
    assert refilled == filled
    sample = await db.scalar("SELECT sections FROM memberships WHERE sections IS NOT NULL")
    assert all(isinstance(path, list) and path for path in json.loads(sample))


def test_an_operator_or_keyword_that_titles_the_section_is_a_word_of_it() -> None:
    """SmolLM2's questions on operators.md (bench_plan.py --pages, embedded engine), rejected
    `off_topic` while operators and capitalised stopwords were no words."""
    gen = GeneratorSettings(mode="backtranslate")
    regex = ("Operators and Literals", "Comparison Operators", "!~")
    span = "Not Regex Match"
    check_question("How to use the !~ operator in SQL?", span, gen, regex)
    check_question("How to use OR in SQL?", "Logical OR", gen, ("Operators and Literals", "OR"))
    assert section_words(regex) == {"comparison", "!~"}
    for question, section in (
        ("How to use the ~ operator in SQL?", regex),  # another operator
        ("How to use or in SQL?", ("Operators and Literals", "OR")),  # "or" in prose
        ("How to use the !~ operator in SQL?", ("Operators and Literals", "Literals")),
    ):
        with pytest.raises(Rejection) as caught:
            check_question(question, span, gen, section)
        assert caught.value.reason == "off_topic"


@pytest.mark.parametrize(
    ("reply", "asked"),
    [  # SmolLM2's replies on the SQL reference (bench_plan.py --pages, embedded engine)
        ("What is the purpose of nullif? How does it work?", "What is the purpose of nullif?"),
        (
            "How to create a list of strings that contains only the first n elements from an "
            "array, where n is 2? Here's how",
            "How to create a list of strings that contains only the first n elements from an "
            "array, where n is 2?",
        ),
        ("What does abs return?", "What does abs return?"),
        ("Why? Because abs returns the absolute value.", None),  # "Why?" is too short alone
        ('What does "Is it?" mean in the docs?', None),  # no "?" with more text after it
    ],
)
def test_a_reply_that_goes_on_after_its_question_is_read_as_that_question(
    reply: str, asked: str | None
) -> None:
    assert first_question(reply, GeneratorSettings().min_question_chars) == (asked or reply)


def test_the_stored_question_is_the_first_one_the_reply_asked() -> None:
    gen = GeneratorSettings(mode="backtranslate")
    span = "Returns _null_ if expression1 equals expression2; otherwise it returns expression1."
    section = ("Scalar Functions", "Conditional Functions", "nullif")
    reply = json.dumps({"question": "What is the purpose of nullif? How does it work?"})
    [pair] = validate_questions(reply, [Passage(span, section)], "df", gen, DuplicateIndex(0.85))
    assert (pair.question, pair.answer) == ("What is the purpose of nullif?", span)
