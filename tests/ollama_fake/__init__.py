"""An Ollama stand-in for the tests: a real aiohttp HTTP server speaking Ollama's API shapes.

The package, by API area: `server` (FakeOllama: knobs, state, lifecycle, app), `listener`
(its aiohttp runner and ports, in-loop or threaded; outages), `native` (/api/chat,
/api/generate), `openai_compat` (/v1/...), `models` (model management), `replies` (what a
generation reply says), `pairs` (the deterministic pair writer: `sentences`, `key_terms`, ...),
`faults`, `traffic` (slots, call log, seeded randomness), `control` (/_fake/...), `wire`
(records and HTTP helpers).

Production code never knows it is talking to this. It implements (shapes checked against
ollama/ollama docs/api.md):

- ``POST /api/chat``      streamed NDJSON (default) or ``"stream": false``; ``format`` = ``"json"``
                          or a JSON schema is honoured by returning JSON that fits the schema;
                          ``messages: []`` loads the model (``done_reason: "load"``), with
                          ``keep_alive: 0`` unloads it. The final object carries ``done_reason``,
                          ``total_duration``, ``load_duration``, ``prompt_eval_count``,
                          ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (ns).
- ``POST /api/generate``  the same for a ``prompt``; no prompt = load (the warm-up call).
- ``GET /api/version`` (``version``), ``GET /api/tags``, ``GET /api/ps``, ``POST /api/show``,
  ``POST /api/copy``, ``DELETE /api/delete``, ``POST /api/pull``.
- ``HEAD /api/blobs/sha256:<hex>`` (200 / 404) and ``POST`` (streams the body, verifies the
  sha256: 201, or 400 on mismatch).
- ``POST /api/create``    ``model``, ``from`` or ``files`` {name: digest}, ``adapters``,
  ``template``, ``system``, ``parameters``, ``quantize``, ``stream``; streamed status lines
  ending in ``{"status": "success"}``; 400 on an unknown blob, a bad GGUF magic, safetensors
  without ``config.json``, or an unsupported ``quantize``. What it got is kept in ``created``.
- ``POST /v1/chat/completions`` (OpenAI-compatible, as vLLM / llama.cpp server): ``response_format``
  ``{"type": "json_schema", "json_schema": {"schema": ...}}`` or ``json_object`` (with an optional
  ``schema``, as llama-cpp-python); ``stream`` as SSE. ``GET /v1/models``. ``openai_flavor``
  ``"llama-cpp-python"`` refuses ``json_schema`` exactly as that server does (500, pydantic
  message), ``"plain"`` refuses any ``response_format`` (400). With ``transcript`` set (recorded
  real exchanges, see tests/recording_proxy.py) it answers only what the real server answered.

Answers are grounded in the prompt: the text between ``<<<BEGIN SOURCE>>>`` and
``<<<END SOURCE>>>`` (``chunk_pattern``; falls back to the last user message) is split into
sentences; each requested pair takes a different sentence run as the answer and builds the
question from that sentence's key terms. Asking again about the same text picks other sentences.

Knobs (plain attributes, change them at any time, also over HTTP via ``/_fake/knobs``):

- ``slots``            parallel slots like ``OLLAMA_NUM_PARALLEL``; requests beyond it queue.
- ``max_queue``        queued requests beyond this get 503 (``OLLAMA_MAX_QUEUE``).
- ``latency_s``        time a request holds its slot (``jitter_s`` adds up to that much).
- ``load_latency_s``   extra time for the first request that loads a model.
- ``rate_503``         fraction answered 503 "server busy" at once.
- ``rate_500``         fraction answered 500 ``{"error": ...}`` after the latency.
- ``rate_400``         fraction answered 400 (a request Ollama refuses, e.g. a bad option).
- ``rate_malformed``   fraction whose content is broken JSON with ``done_reason: "stop"``.
- ``rate_truncated``   fraction cut short with ``done_reason: "length"``.
- ``rate_stream_error`` fraction of streamed replies ending in an ``{"error": ...}`` line
                       (HTTP 200); non-streamed ones get a 500 instead.
- ``rate_bad_content`` fraction of schema-valid but bad pairs (ungrounded answer, foreign URL,
                       injected instruction, licence question, empty answer) — validation food.
- ``models``           names served (others get 404 "not found, try pulling it first").
- ``avoid_asked``      follow the prompt's list of questions already asked (``asked_pattern``:
                       a header line ending in ``:`` then ``- question`` lines): pairs whose
                       question would repeat one on the list go last, as an instruction-following
                       model would do (default on; off = a model that ignores the list).
- ``responder``        optional ``(prompt_text, model) -> str`` overriding plain-text replies.
- ``create_error``     optional ``(status, message)``: ``/api/create`` fails with it (status 200 =
                       the error arrives as the last line of the status stream, as Ollama does).
- ``delete_error``     optional ``(status, message)``: ``/api/delete`` fails with it.

Every decision is drawn from ``random.Random(f"{seed}|{prompt sha}|{n}")`` where n counts earlier
calls with the same prompt, so a run is reproducible whatever the interleaving.

Call log: ``calls`` (one ``Call`` per generation request, appended when it arrives),
``in_flight`` / ``max_in_flight`` (requests being handled, queued included), ``max_running``
(requests holding a slot), ``calls_per_chunk()``; with ``call_log`` set, each call is also
appended as JSON lines (``start`` and ``end`` events) to that file, flushed at once.

Outages: ``set_outage(True)`` stops listening and force-closes every open connection (clients
see connection refused / reset); ``set_outage(False)`` listens again on the same port.

Use it in one of three ways:

- ``fake = FakeOllama(); fake.start()`` — own event loop in a daemon thread (works from sync
  and async tests; what the ``ollama_fake`` fixture in conftest.py does); ``fake.stop()``.
- ``async with FakeOllama().serving() as fake:`` — inside the caller's event loop
  (then use ``await fake.aset_outage(...)``).
- ``python -m ollama_fake --port 0 --slots 4 --latency-s 0.05 --call-log calls.jsonl`` (with
  ``tests/`` on ``PYTHONPATH`` or as the working directory) —
  its own process; prints ``{"url": ..., "control_url": ...}`` on one line; the control port keeps
  answering ``/_fake/knobs``, ``/_fake/outage``, ``/_fake/stats`` during an outage.
"""

from ollama_fake.faults import LLAMA_CPP_PYTHON_FORMAT_ERROR
from ollama_fake.server import DEFAULT_MODELS, FakeOllama
from ollama_fake.wire import VERSION, Call

__all__ = ["DEFAULT_MODELS", "LLAMA_CPP_PYTHON_FORMAT_ERROR", "VERSION", "Call", "FakeOllama"]
