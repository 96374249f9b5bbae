"""Parse `daemon.status_listen`: `host:port`, `[v6]:port` or `unix:/absolute/path`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["parse_listen"]


def parse_listen(listen: str) -> tuple[str, int] | Path:
    """`host:port` / `[v6]:port` → (host, port); `unix:/path` → Path. Raises ValueError."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path.startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {listen!r}")
        return Path(path)
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port or unix:/path, got {listen!r}")
    if not 0 <= int(port) < 65536:  # 0: any free port (tests)
        raise ValueError(f"port out of range in {listen!r}")
    return host.strip("[]"), int(port)
