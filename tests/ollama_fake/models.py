"""Ollama's model-management routes: version, tags, ps, show, copy, delete, pull, blobs, create.

Blobs are verified by sha256 (400 on mismatch); `/api/create` takes `files` by digest or `from`,
streams status lines ending in `success`, and refuses an unknown blob, a bad GGUF magic,
safetensors without `config.json`, or an unsupported `quantize`; `create_error` and
`delete_error` make those routes fail (faults).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ollama_fake.wire import (
    QUANTIZE_TYPES,
    Blob,
    Model,
    err,
    full_name,
    json_body,
    now_iso,
    sha,
    status_stream,
)

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama


async def version(fake: FakeOllama, request: web.Request) -> web.Response:
    fake.requests_by_path[request.path] += 1
    return web.json_response({"version": fake.version})


async def tags(fake: FakeOllama, request: web.Request) -> web.Response:
    fake.requests_by_path[request.path] += 1
    return web.json_response({"models": [_model_entry(m) for m in fake.models.values()]})


async def ps(fake: FakeOllama, request: web.Request) -> web.Response:
    fake.requests_by_path[request.path] += 1
    running = []
    for name in fake.loaded:
        if name in fake.models:
            entry = _model_entry(fake.models[name])
            entry["expires_at"] = now_iso()
            entry["size_vram"] = entry["size"]
            running.append(entry)
    return web.json_response({"models": running})


async def show(fake: FakeOllama, request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    fake.requests_by_path[request.path] += 1
    name = full_name(str(body.get("model") or body.get("name") or ""))
    model = fake.models.get(name)
    if model is None:
        return err(404, f"model '{name}' not found")
    params = "\n".join(
        f"{key:<30} {json.dumps(v) if isinstance(v, str) else v}"
        for key, values in model.parameters.items()
        for v in (values if isinstance(values, list) else [values])
    )
    modelfile = f'FROM {name}\nTEMPLATE """{model.template}"""\n'
    if model.system:
        modelfile += f'SYSTEM """{model.system}"""\n'
    return web.json_response(
        {
            "modelfile": modelfile,
            "parameters": params,
            "template": model.template,
            "system": model.system,
            "details": _details(model),
            "model_info": {"general.architecture": model.family},
            "capabilities": ["completion"],
            "modified_at": model.modified_at,
        }
    )


async def copy(fake: FakeOllama, request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    fake.requests_by_path[request.path] += 1
    source = full_name(str(body.get("source") or ""))
    destination = full_name(str(body.get("destination") or ""))
    if source not in fake.models:
        return err(404, f"model '{source}' not found")
    if destination == ":latest":
        return err(400, "destination is required")
    original = fake.models[source]
    fake.models[destination] = Model(**{**asdict(original), "name": destination})
    if source in fake.created:
        fake.created[destination] = fake.created[source]
    return web.Response(status=200)


async def delete(fake: FakeOllama, request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    fake.requests_by_path[request.path] += 1
    if fake.delete_error is not None:
        return err(*fake.delete_error)
    name = full_name(str(body.get("model") or body.get("name") or ""))
    if fake.models.pop(name, None) is None:
        return err(404, f"model '{name}' not found")
    fake.loaded.pop(name, None)
    return web.Response(status=200)


async def pull(fake: FakeOllama, request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    fake.requests_by_path[request.path] += 1
    name = str(body.get("model") or body.get("name") or "")
    if not name:
        return err(400, "model is required")
    fake.add_model(name)
    statuses = ["pulling manifest", "verifying sha256 digest", "writing manifest", "success"]
    return await status_stream(request, statuses, body.get("stream", True) is not False)


async def blob_head(fake: FakeOllama, request: web.Request) -> web.Response:
    fake.requests_by_path["/api/blobs"] += 1
    return web.Response(status=200 if request.match_info["digest"] in fake.blobs else 404)


async def blob_post(fake: FakeOllama, request: web.Request) -> web.Response:
    fake.requests_by_path["/api/blobs"] += 1
    digest = request.match_info["digest"]
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return err(400, f"invalid digest format {digest!r}")
    hasher = hashlib.sha256()
    size, head, small = 0, b"", bytearray()
    async for block in request.content.iter_chunked(1 << 20):
        hasher.update(block)
        if len(head) < 8:
            head = (head + block)[:8]
        if size < (1 << 20):
            small.extend(block[: (1 << 20) - size])
        size += len(block)
    if f"sha256:{hasher.hexdigest()}" != digest:
        return err(400, "digest mismatch, expected " + digest)
    fake.blobs[digest] = Blob(size, head, bytes(small) if size <= (1 << 20) else None)
    fake.blob_uploads[digest] += 1
    return web.Response(status=201)


async def create(fake: FakeOllama, request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    fake.requests_by_path[request.path] += 1
    problem, statuses, fmt = _check_create(fake, body)
    if problem:
        return err(400, problem)
    if fake.create_error is not None:
        status, message = fake.create_error
        if status != 200:
            return err(status, message)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(json.dumps({"status": statuses[0]}).encode() + b"\n")
        await resp.write(json.dumps({"error": message}).encode() + b"\n")
        await resp.write_eof()
        return resp
    name = full_name(str(body["model"]))
    quantize = body.get("quantize") or ""
    base = fake.models.get(full_name(str(body.get("from") or "")))
    params = dict(base.parameters if base else {})
    params.update(body.get("parameters") or {})
    fake.models[name] = Model(
        name=name,
        format=fmt,
        quantization_level=quantize.upper() if quantize else "F16",
        template=str(body.get("template") or (base.template if base else "{{ .Prompt }}")),
        system=str(body.get("system") or (base.system if base else "")),
        parameters=params,
        digest=sha(json.dumps(body, sort_keys=True)),
        modified_at=now_iso(),
    )
    fake.created[name] = body
    return await status_stream(request, statuses, body.get("stream", True) is not False)


def _check_create(fake: FakeOllama, body: dict[str, Any]) -> tuple[str | None, list[str], str]:
    if not body.get("model"):
        return "model is required", [], ""
    files: dict[str, str] = body.get("files") or {}
    if not isinstance(files, dict):
        return "files must be an object of name: digest", [], ""
    if not files and not body.get("from"):
        return "neither 'from' or 'files' was specified", [], ""
    if body.get("from") and not files and full_name(str(body["from"])) not in fake.models:
        return f"model '{body['from']}' not found", [], ""
    quantize = body.get("quantize")
    if quantize and quantize not in QUANTIZE_TYPES:
        return f"unsupported quantization type {quantize}", [], ""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        return "parameters must be an object", [], ""
    stop = params.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return "parameters.stop must be a list of strings", [], ""
    for fname, digest in {**files, **(body.get("adapters") or {})}.items():
        if digest not in fake.blobs:
            return f"blob {digest} ({fname}) not found; upload it to /api/blobs first", [], ""
    statuses: list[str] = []
    fmt = "gguf"
    ggufs = [n for n in files if n.endswith(".gguf")]
    if ggufs:
        for n in ggufs:
            if fake.blobs[files[n]].head[:4] != b"GGUF":
                return f"{n}: invalid file magic", [], ""
        statuses.append("parsing GGUF")
    elif files:
        fmt = "safetensors"
        if "config.json" not in files or not any(n.endswith(".safetensors") for n in files):
            return "safetensors model needs config.json and *.safetensors files", [], ""
        statuses.append("converting model")
    if quantize:
        statuses.append(f"quantizing F16 model to {quantize.upper()}")
    statuses += [f"using existing layer {d}" for d in files.values()]
    statuses += ["creating new layer sha256:" + sha(str(body.get("template")))]
    statuses += ["writing manifest", "success"]
    return None, statuses, fmt


def _details(model: Model) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": model.format,
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


def _model_entry(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": model.modified_at,
        "size": model.size,
        "digest": model.digest,
        "details": _details(model),
    }
