"""The status endpoint over real HTTP: GET only, Host allow-list, no CORS, Prometheus text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.status_server import StatusServer, parse_listen

pytestmark = pytest.mark.anyio

SNAPSHOT = {"files": {"live": 3, "skipped": 1}, "jobs": {"pending": 2, "done": 5}, "note": "x"}


async def _snapshot() -> dict[str, Any]:
    return dict(SNAPSHOT)


def _stats() -> dict[str, Any]:
    return {"phase": "running", "counters": {"reconciles": 4}, "breaker_open": False}


@pytest.fixture
async def server() -> AsyncIterator[str]:
    srv = StatusServer("127.0.0.1:0", _snapshot, _stats, ["127.0.0.1", "localhost"])
    await srv.start()
    yield srv.url
    await srv.stop()


async def test_status_returns_snapshot_and_live_stats(server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(server + "/status") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["files"] == {"live": 3, "skipped": 1}
    assert body["daemon"]["counters"]["reconciles"] == 4
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_healthz_answers_ok(server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(server + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["ok"] is True


async def test_post_is_refused_with_405(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/status", "/healthz", "/metrics"):
            async with http.post(server + path, data=b"{}") as resp:
                assert resp.status == 405


async def test_foreign_host_header_is_refused_with_403(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Host": "evil.example:8377"}
        async with http.get(server + "/status", headers=headers) as resp:
            assert resp.status == 403
        async with http.get(server + "/status", headers={"Host": "localhost:8377"}) as resp:
            assert resp.status == 200


async def test_cors_preflight_gets_no_cors_headers(server: str) -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    async with (
        aiohttp.ClientSession() as http,
        http.options(server + "/status", headers=headers) as resp,
    ):
        assert resp.status == 405
        assert not any(h.lower().startswith("access-control-") for h in resp.headers)


async def test_metrics_are_prometheus_text(server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(server + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("doctune_jobs", (("state", "pending"),))] == 2
    assert samples[("doctune_reconciles_total", ())] == 4
    assert not any("note" in name for name, _ in samples)  # strings are not metrics


async def test_unix_socket_listen(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "status.sock"
    srv = StatusServer(f"unix:{sock}", _snapshot, _stats, ["localhost"])
    await srv.start()
    try:
        conn = aiohttp.UnixConnector(path=str(sock))
        async with (
            aiohttp.ClientSession(connector=conn) as http,
            http.get("http://localhost/healthz") as resp,
        ):
            assert resp.status == 200
    finally:
        await srv.stop()
    assert not sock.exists()


async def test_failing_snapshot_is_reported_not_fatal() -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("db locked")

    srv = StatusServer("127.0.0.1:0", broken, _stats, ["127.0.0.1"])
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(srv.url + "/status") as r:
            body = await r.json()
        assert "db locked" in body["snapshot_error"]
        assert body["daemon"]["phase"] == "running"
    finally:
        await srv.stop()


def test_parse_listen_forms() -> None:
    assert parse_listen("127.0.0.1:8377") == ("127.0.0.1", 8377)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("unix:/run/doctune/status.sock") == Path("/run/doctune/status.sock")
    for bad in ("8377", "localhost:http", "unix:relative.sock", "host:70000"):
        with pytest.raises(ValueError, match=r"expected|absolute|range"):
            parse_listen(bad)
