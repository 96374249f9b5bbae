"""deploy/doctune.service passes `systemd-analyze verify` and stays at exposure <= 4.9."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "doctune.service"
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _installed_copy(tmp_path: Path) -> Path:
    """The unit as installed from this checkout (ExecStart must exist for verify)."""
    copy = tmp_path / "doctune.service"
    copy.write_text(UNIT.read_text().replace("/opt/doctune", str(ROOT)))
    return copy


def test_unit_verifies_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "doctune.service" not in result.stderr  # no warnings about our unit


def test_unit_exposure_is_at_most_4_9(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--threshold=49",
            str(_installed_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overall exposure level for doctune.service" in result.stdout


def test_unit_has_the_required_lifecycle_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "KillMode=mixed",
        "OOMPolicy=continue",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "StateDirectory=doctune",
        "WatchdogSec=",
    ):
        assert line in text, line


def _directives(name: str) -> list[str]:
    """Values of every `name=` line of the unit (comments skipped)."""
    prefix = name + "="
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def test_the_trainer_can_read_cpu_features() -> None:
    # ProcSubset=pid hides /proc/cpuinfo: bf16 detection would silently fall back to fp32
    assert _directives("ProcSubset") in ([], ["all"])


def test_nccl_may_use_netlink_for_multi_gpu_training() -> None:
    families = " ".join(_directives("RestrictAddressFamilies")).split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families)


def test_runtime_directory_is_what_the_daemon_and_retrain_use() -> None:
    # systemd sets $RUNTIME_DIRECTORY from this; paths.runtime_dir defaults to it
    assert _directives("RuntimeDirectory") == ["doctune"]
