"""The torch child's protocol (`pipeline.child_process`), with small real Python children."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.child_process import ChildProcess, child_env

pytestmark = pytest.mark.anyio


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(
        "import sys, time\nfrom pipeline.child_process import emit, emit_result\n"
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    return [sys.executable, str(path)]


async def test_events_reach_the_parent_and_the_result_is_kept(tmp_path: Path) -> None:
    cmd = _script(
        tmp_path,
        """
        print("not json: ignored")
        emit("step", step=1)
        emit("step", step=2)
        print("a log line", file=sys.stderr)
        emit_result({"answer": 42})
        """,
    )
    events: list[dict[str, Any]] = []
    ended = await ChildProcess(cmd, name="the test child", on_event=events.append).run()
    assert ended.ok
    assert ended.failure() is None
    assert [e["step"] for e in events] == [1, 2]
    assert ended.result == {"answer": 42}
    assert ended.tail == ("a log line",)


async def test_a_failing_child_is_described_with_its_stderr_tail(tmp_path: Path) -> None:
    cmd = _script(tmp_path, 'print("boom: bad input", file=sys.stderr)\nsys.exit(3)\n')
    ended = await ChildProcess(cmd, name="the test child").run()
    failure = ended.failure()
    assert not ended.ok
    assert failure is not None
    assert failure.startswith("the test child exited with status 3")
    assert "--- stderr tail ---\nboom: bad input" in failure


async def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The child starts a grandchild in its process group; both must be gone after the timeout.
    pid_file = tmp_path / "grandchild.pid"
    cmd = _script(
        tmp_path,
        f"""
        import subprocess
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        emit("started")
        time.sleep(60)
        """,
    )
    started: list[int] = []

    async def on_start(pid: int) -> None:
        started.append(pid)

    ended = await ChildProcess(cmd, name="the test child").run(timeout_s=3, on_start=on_start)
    assert ended.timed_out
    assert (ended.failure() or "").startswith("timed out after 3 s")
    assert started
    assert started[0] > 0
    grandchild = int(pid_file.read_text())
    for _ in range(200):  # the grandchild may take a moment to exit after SIGKILL
        if not _alive(grandchild):
            break
        await anyio.sleep(0.05)
    assert not _alive(grandchild)


async def test_cancelling_the_parent_kills_the_child(tmp_path: Path) -> None:
    cmd = _script(tmp_path, 'emit("up")\ntime.sleep(60)\n')
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)

    with anyio.move_on_after(2):
        await ChildProcess(cmd).run(on_start=on_start)
    assert pids
    assert not _alive(pids[0])


def test_child_env_makes_the_project_importable_offline() -> None:
    env = child_env({"PYTHONPATH": "/elsewhere"})
    root = str(Path(__file__).resolve().parents[1])
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/elsewhere"]
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False
