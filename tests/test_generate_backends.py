"""Real-server compatibility: response formats, refused requests, `auto`, backtranslation."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gen_helpers import corpus_paragraphs, gen_settings, seed_chunks
from ollama_fake import LLAMA_CPP_PYTHON_FORMAT_ERROR, FakeOllama
from recording_proxy import load_transcript

from pipeline.clients.errors import (
    ConfigurationError,
    FinalError,
    ModelMissingError,
    OutageError,
    RetryableError,
)
from pipeline.clients.http import error_for_status, is_format_refusal
from pipeline.clients.openai_compat import format_request
from pipeline.generate import backtranslate
from pipeline.generate.backend import embedded_model_name, forget_resolutions, resolve_backend
from pipeline.generate.backtranslate import Passage
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.prompt import BT_PROMPT_VERSION, GRAMMAR_MAX_LENGTH, response_schema
from pipeline.generate.service import GenerationService
from pipeline.generate.validate import DuplicateIndex, Rejection
from pipeline.settings import GeneratorSettings, Settings
from state.db import Database, open_db
from state.generation_status import job_counts

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures" / "llamacpp"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "data" / "doctune.sqlite3")
    yield database
    await database.close()


@pytest.fixture(autouse=True)
def _fresh_backend_choice() -> None:
    forget_resolutions()


async def _run(db: Database, settings: Settings) -> GenerationService:
    await ensure_jobs(db, settings.generator)
    service = GenerationService(db, settings)
    await service.run_once()
    return service


def _objects(schema: Any) -> list[dict[str, Any]]:
    if not isinstance(schema, dict):
        return []
    found = [schema] if schema.get("type") == "object" else []
    for value in schema.values():
        if isinstance(value, dict):
            found += _objects(value)
    return found


@pytest.mark.parametrize("mode", ["qa", "backtranslate"])
@pytest.mark.parametrize("pairs_per_chunk", [1, 3])
def test_reply_schemas_are_strict_and_bounded(mode: str, pairs_per_chunk: int) -> None:
    gen = GeneratorSettings(mode=mode, pairs_per_chunk=pairs_per_chunk)  # type: ignore[arg-type]
    schema = (
        response_schema(gen)
        if mode == "qa"
        else backtranslate.question_schema(gen, pairs_per_chunk)
    )
    objects = _objects(schema)
    assert objects
    for obj in objects:  # OpenAI/vLLM strict mode
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    text = json.dumps(schema)
    assert '"minLength"' in text
    assert f'"maxLength": {GRAMMAR_MAX_LENGTH}' in text or '"maxLength": 300' in text


def test_request_shapes_follow_vllm_and_llama_cpp_python() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    schema = response_schema(GeneratorSettings(mode="qa"))
    same, fmt = format_request("json_schema", messages, schema)
    # OpenAI / vLLM: response_format.json_schema = {name, schema, strict}
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "qa_reply", "schema": schema, "strict": True},
    }
    assert same == messages
    # llama-cpp-python (and llama.cpp's server): json_object with the schema beside it
    assert format_request("json_object", messages, schema)[1] == {
        "type": "json_object",
        "schema": schema,
    }
    in_prompt, none = format_request("prompt", messages, schema)
    assert none is None
    assert json.dumps(schema, separators=(",", ":")) in in_prompt[-1]["content"]
    assert messages[-1]["content"] == "u"  # the caller's messages are left alone


def test_error_replies_are_classified() -> None:
    url, model = "http://x", "m"
    refusal = LLAMA_CPP_PYTHON_FORMAT_ERROR
    assert is_format_refusal(500, refusal)
    assert not is_format_refusal(500, "model runner failed")
    too_long = "Requested tokens (5000) exceed context window of 4096"
    assert isinstance(error_for_status(400, too_long, model, url), FinalError)
    assert isinstance(error_for_status(400, "unknown field 'foo'", model, url), ConfigurationError)
    assert isinstance(error_for_status(422, "bad", model, url), ConfigurationError)
    assert isinstance(error_for_status(500, refusal, model, url), ConfigurationError)
    assert isinstance(error_for_status(500, "model runner failed", model, url), RetryableError)
    assert isinstance(error_for_status(503, "busy", model, url), OutageError)
    assert isinstance(error_for_status(404, "no such model", model, url), ModelMissingError)


@pytest.mark.parametrize(
    ("flavor", "refused_calls", "format_now"),
    [("vllm", 0, "json_schema"), ("llama-cpp-python", 1, "json_object"), ("plain", 2, "prompt")],
)
async def test_a_refused_response_format_falls_back_once_and_is_remembered(
    db: Database,
    tmp_path: Path,
    ollama_fake: FakeOllama,
    flavor: str,
    refused_calls: int,
    format_now: str,
) -> None:
    ollama_fake.openai_flavor = flavor
    await seed_chunks(db, corpus_paragraphs(5))
    settings = gen_settings(
        tmp_path, ollama_fake.url + "/v1", backend="openai", concurrency=1, max_attempts=1
    )
    service = await _run(db, settings)
    assert await job_counts(db) == {"pending": 0, "leased": 0, "done": 5, "dead": 0}
    outcomes = [c.outcome for c in ollama_fake.generation_calls()]
    assert outcomes.count("format_refused") == refused_calls
    assert outcomes[:refused_calls] == ["format_refused"] * refused_calls  # only at the start
    assert service.pool.endpoints[0].client.format_mode == format_now  # type: ignore[attr-defined]
    assert await db.scalar("SELECT MAX(attempts) FROM jobs") == 0


async def test_auto_uses_ollama_when_it_answers(ollama_fake: FakeOllama) -> None:
    resolved = await resolve_backend(GeneratorSettings(url=ollama_fake.url))
    assert resolved.gen.backend == "ollama"
    assert resolved.gen.model == "llama3.2:3b"
    assert resolved.why.startswith("auto: Ollama answers")


async def test_auto_without_ollama_is_the_embedded_engine_named_by_its_file(
    tmp_path: Path,
) -> None:
    dead_url = "http://127.0.0.1:9"
    resolved = await resolve_backend(GeneratorSettings(url=dead_url, connect_timeout_s=0.5))
    assert resolved.gen.backend == "llamacpp"
    assert resolved.gen.model_path is not None
    assert resolved.gen.model.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert "no Ollama" in resolved.why
    # another file is another model name (so new jobs); the same content is the same name
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy.write_bytes(b"GGUF" + b"\0" * 64)
    assert await embedded_model_name(copy) != resolved.gen.model
    assert await embedded_model_name(copy) == await embedded_model_name(copy)


async def test_a_bad_gguf_is_one_error_naming_the_file(db: Database, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("not a model")
    settings = gen_settings(tmp_path, "http://127.0.0.1:9", backend="llamacpp", model_path=bad)
    with pytest.raises(ConfigurationError, match=str(bad)):
        await GenerationService(db, settings).run_once()
    missing = tmp_path / "nowhere.gguf"
    settings = gen_settings(tmp_path, "http://127.0.0.1:9", backend="auto", model_path=missing)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await ensure_jobs(db, settings.generator)


def test_backtranslate_answers_are_verbatim_prose_paragraphs() -> None:
    gen = GeneratorSettings()
    heading, prose, code = (
        "## Catalogs",
        "DataFusion comes with a basic in memory catalog functionality in the catalog module, "
        "which you can use to register tables by name and query them with SQL.",
        '```rust\nlet ctx = SessionContext::new();\nctx.register_table("t", table)?;\n```',
    )
    text = f"{heading}\n\n{prose}\n\n{code}\n"
    assert backtranslate.answer_spans(text, 1, gen) == [prose]
    assert backtranslate.answer_spans(text, 3, gen) == [prose]
    # nothing prose-like: the whole chunk, code and all, is the answer
    assert backtranslate.answer_spans(code, 1, gen) == [code]
    licence = "Licensed to the Apache Software Foundation (ASF) under one or more contributor "
    assert backtranslate.answer_spans(f"{licence}license agreements.\n\n{prose}", 1, gen) == [prose]


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        (
            "DataFusion comes with a basic in memory catalog functionality in the catalog "
            "module, which you can use to register tables by name?",
            "copies_answer",
        ),
        ("DataFusion is a library with a catalog module.", "not_a_question"),
        ("DataFusion has a catalog module to register tables?", "not_a_question"),
        ("What is it about?", "not_specific"),
        ("How do I configure the Parquet writer?", "off_topic"),
        ("What licence covers the catalog module?", "boilerplate"),
    ],
)
def test_backtranslate_rejects_unusable_questions(question: str, reason: str) -> None:
    span = (
        "DataFusion comes with a basic in memory catalog functionality in the catalog module, "
        "which you can use to register tables by name."
    )
    content = json.dumps({"question": question})
    with pytest.raises(Rejection) as caught:
        backtranslate.validate_questions(
            content, [Passage(span)], "df", GeneratorSettings(), DuplicateIndex(0.85)
        )
    assert caught.value.reason == reason


async def test_a_question_quoting_a_clause_of_its_passage_is_accepted() -> None:
    span = (
        "This section describes how to create and manage catalogs, schemas, and tables in "
        "DataFusion. For those wishing to dive into the code, the catalog module has examples."
    )
    question = "How to create and manage catalogs, schemas, and tables in DataFusion"  # real reply
    content = json.dumps({"question": question})
    pairs = backtranslate.validate_questions(
        content, [Passage(span)], "df", GeneratorSettings(), DuplicateIndex(0.85)
    )
    assert [(p.question, p.answer) for p in pairs] == [(question, span)]


@pytest.mark.parametrize(
    "question",
    [
        "How do I register tables by name in the catalog module?",
        "In DataFusion, how do I register tables by name in the catalog?",
        "The catalog module registers tables in which way?",
        "How to register tables by name with the catalog module",  # SmolLM2's title form
    ],
)
def test_backtranslate_accepts_questions_in_any_position(question: str) -> None:
    span = (
        "DataFusion comes with a basic in memory catalog functionality in the catalog module, "
        "which you can use to register tables by name."
    )
    backtranslate.check_question(question, span, GeneratorSettings())


def test_a_project_name_split_in_two_words_is_on_topic() -> None:
    span = (
        "DataFusion comes with a basic in memory catalog functionality in the catalog module, "
        "which you can use to register tables by name."
    )
    gen = GeneratorSettings()
    backtranslate.check_question("What does data fusion offer developers?", span, gen)
    with pytest.raises(Rejection) as caught:  # two words joined only when adjacent
        backtranslate.check_question("What data does fusion offer developers?", span, gen)
    assert caught.value.reason == "off_topic"


def test_the_question_schema_admits_one_line_questions_only() -> None:
    """The pattern a constrained server decodes with: an interrogative, then words on one line
    without quotes or braces, none of them pointing at the passage, not ending in a space. What
    it admits passes `check_question`'s question-form rule (SmolLM2 replies from bench_plan.py);
    the replies it refuses are the ones `check_question` rejected."""
    gen = GeneratorSettings()
    one = backtranslate.question_schema(gen, 1)["properties"]["question"]
    many = backtranslate.question_schema(gen, 3)["properties"]["questions"]["items"]
    assert one == many
    pattern = re.compile(one["pattern"])
    span = "DataFusion's API is well maintained: deprecated methods remain for 6 major versions."
    for question in (
        "How can I ensure the API is well maintained?",
        "What is the architecture of the DataFusion project?",
        "Does DataFusion keep deprecated methods for 6 major versions?",
        "How to keep the DataFusion API well maintained",  # SmolLM2's title form
        "Are deprecated methods thi or th or t?",  # a word may be a part of "this"
        "What do a[0] and the other methods return?",  # "[" inside a word
    ):
        assert pattern.fullmatch(question), question
        backtranslate.check_question(question, span, gen)
    for statement in (
        "BEGIN SOURCE",  # a heading
        "DataFusion is a fast moving project, which results in frequent internal changes.",
        'What is the purpose of the "api-change" label?',  # a quote would need an escape
        "What is the purpose of the ",  # ` "` opening a quotation ended the string
        "How can we improve TableProvider? }}  #1 2022-01-24",  # `"}}` refused, went on
        "What is DataFusion?\nDataFusion is a query engine.",
        "What " + "x" * gen.max_question_chars + "?",  # a word over WORD_CHARS
        "What " + "is it " * gen.max_question_chars,  # more words than the bound
        # Pointing at the passage (SmolLM2's most common off_topic reply), in any case:
        "What is the purpose of this passage?",
        "What is This?",
        "What is the purpose of thispassage?",  # SmolLM2 glued the next word on
        "What is the purpose of this_project?",
        "Why do these methods remain?",
        "How is the Passage maintained",
        "What is the purpose of the [project_name]?",  # a template placeholder
    ):
        assert not pattern.fullmatch(statement), statement
    with pytest.raises(Rejection) as caught:  # the pattern counts words; the validator, chars
        backtranslate.check_question("Why is x", span, gen)
    assert caught.value.reason == "question_length"


def test_llama_cpp_turns_the_question_pattern_into_grammar_rules() -> None:
    """llama-cpp-python's server falls back to a plain JSON grammar when the converter fails, so
    the converter itself must take the schema: the question rule starts with the openers, its
    characters exclude the quote, backslash, control characters, braces and (inside a word) the
    space, and no word can start with "this"."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = backtranslate.question_schema(GeneratorSettings(), 1)
    rules = dict(
        line.split(" ::= ", 1) for line in json_schema_to_gbnf(json.dumps(schema)).splitlines()
    )
    question = rules["question"]
    assert question.startswith('"\\"" ("Wha" "t" | "Ho" "w"')
    assert question.endswith('"\\"" space')
    grammar = "\n".join(rules.values())
    classes = set(re.findall(r"\[\^[^\]]*\]", grammar))
    assert all(c.startswith('[^"\\\\\\x00-\\x1F\\x7F{} ') for c in classes), classes
    assert "[tT] [h] [i] [^" in grammar  # after "thi" anything but "s", or the word ends
    assert "[tT] [h] [i] [s]" not in grammar  # no word starts with "this"


async def test_backtranslate_stores_the_span_as_the_answer(
    db: Database, tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    texts = corpus_paragraphs(6)
    await seed_chunks(db, texts)
    settings = gen_settings(tmp_path, ollama_fake.url, mode="backtranslate")
    await _run(db, settings)
    rows = await db.fetchall(
        "SELECT p.answer, c.text FROM pairs p JOIN chunks c ON c.id = p.chunk_id"
    )
    assert len(rows) == 6
    assert all(answer in text for answer, text in rows)
    assert await db.scalar("SELECT DISTINCT prompt_version FROM pairs") == BT_PROMPT_VERSION


@pytest.mark.skipif(
    not (FIXTURES / "contract.jsonl").exists(), reason="record with DOCTUNE_RECORD_FIXTURES=1"
)
async def test_recorded_llama_cpp_python_exchanges_replay_to_the_same_pairs(
    db: Database, tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    """The real server's replies (tests/fixtures/llamacpp/contract.jsonl, recorded by the slow
    contract test) played back by the stand-in: the json_schema refusal, the fallback, and the
    replies with raw newlines in their strings all go through as they did for real."""
    meta = json.loads((FIXTURES / "contract.meta.json").read_text())
    ollama_fake.transcript = load_transcript(FIXTURES / "contract.jsonl")
    await seed_chunks(db, corpus_paragraphs(meta["chunks"]))
    settings = gen_settings(
        tmp_path, ollama_fake.url, **meta["generator"], backend="openai", concurrency=1
    )
    await _run(db, settings)
    assert [c.outcome for c in ollama_fake.generation_calls()].count("unrecorded") == 0
    assert await job_counts(db) == meta["job_counts"]
    questions = [r[0] for r in await db.fetchall("SELECT question FROM pairs ORDER BY id")]
    assert questions == meta["questions"]


def test_near_duplicates_among_real_smollm2_questions() -> None:
    """Questions SmolLM2-135M wrote for DataFusion's catalogs page (bench_embedded.py run):
    the same question again, re-cased or re-punctuated, is a duplicate; a different subject
    or verb is not (no question-word list is dropped any more)."""
    index = DuplicateIndex(0.85)
    for question in (
        "Implementing MemorySchemaProvider",
        "How to create a new schemaProvider in C#",
        "What is the purpose of a MemorySchemaProvider? How does it work?",
    ):
        index.add("datafusion", question)
    assert index.find("datafusion", "Implementing MemorySchemaProvider.") is not None
    assert index.find("datafusion", "how to create a new SchemaProvider in C#?") is not None
    assert index.find("datafusion", "Implementing MemorySchemaProvider in DataFusion") is None
    assert index.find("datafusion", "How to use a new schemaProvider in C#") is None
    assert index.find("other", "Implementing MemorySchemaProvider") is None


def test_a_rare_name_or_an_operator_tells_real_smollm2_questions_apart() -> None:
    """Questions SmolLM2-135M wrote on the SQL reference (bench_plan.py, embedded engine): the
    same template about another function, operator or keyword is a new question; its name is
    rarer than the template's words, and outweighs them. Copies are still duplicates."""
    index = DuplicateIndex(0.85)
    template = "How to use the {} function in SQL, including example usage."
    for name in ("median", "approx_distinct", "array_agg", "avg", "corr", "count", "covar"):
        index.add("df", template.format(name))
    index.add("df", "How to use the function in SQL, including example usage.")  # no name
    index.add("df", "How to use the `~` operator in SQL, including comparison operators.")
    index.add("df", "How to use the AND logical operator in SQL, including code snippets.")
    # plain Jaccard 6/7 against the nameless one: only the weights set bool_and apart
    assert index.find("df", template.format("bool_and")) is None
    assert index.find("df", template.format("first_value")) is None
    assert (
        index.find("df", "How to use the `~*` operator in SQL, including comparison operators.")
        is None
    )
    assert (
        index.find("df", "How to use the OR logical operator in SQL, including code snippets.")
        is None
    )
    assert index.find("df", "how to use the median() function in SQL, including example usage?")
    assert index.find("df", "How to use the ~ operator in SQL, including comparison operators?")
    assert index.find("df", "How to use the function in SQL including example usage")
    assert index.find("df", "How to use the AND logical operator in SQL including code snippets?")


def test_a_forgotten_question_no_longer_counts() -> None:
    index = DuplicateIndex(0.85)
    question = "How does DataFusion compare with XYZ?"
    handle = index.add("df", question)
    index.add("df", "How does DataFusion read Parquet files?")
    weight = index.weight("df", "xyz")
    index.remove("df", handle)
    index.remove("df", handle)  # a second remove is a no-op
    index.remove("df", index.add("df", "Is it?"))  # a question of stopwords only
    assert index.find("df", question) is None
    assert len(index) == 1
    assert index.weight("df", "xyz") > weight  # no question has it any more


async def test_a_remembered_choice_keeps_the_other_settings(ollama_fake: FakeOllama) -> None:
    first = await resolve_backend(GeneratorSettings(url=ollama_fake.url))
    second = await resolve_backend(GeneratorSettings(url=ollama_fake.url, pairs_per_chunk=3))
    assert first.gen.backend == second.gen.backend == "ollama"
    assert second.gen.pairs_per_chunk == 3  # a reload that changes other keys is honoured
    assert second.configured == "auto"
