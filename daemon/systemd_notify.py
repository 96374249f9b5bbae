"""systemd's notify protocol spoken directly: one datagram per message to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time

import structlog

__all__ = ["Notifier", "monotonic_usec"]

log = structlog.get_logger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(raw: str) -> str | bytes:
    """`@name` is an abstract socket (leading NUL); anything else is a filesystem path."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends sd_notify messages; every method is a silent no-op when not run by systemd.

    Sending is a non-blocking datagram, so it is safe to call from the event loop; a
    full or vanished socket is logged once and never raises into the daemon.
    """

    def __init__(self, address: str | None = None, *, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (i.e. we run under Type=notify)."""
        return self.address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of WATCHDOG_USEC, or None when disabled."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def send(self, *lines: str) -> bool:
        """Send `KEY=value` lines as one datagram; returns whether it was delivered."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, _socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify_failed", socket=self.address, error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (also ends a reload), optionally with a STATUS line."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=<one line shown by `systemctl status`>."""
        return self.send("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the event loop is alive."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload requires."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        """STOPPING=1: the drain has begun."""
        return self.send("STOPPING=1")

    def close(self) -> None:
        """Close the datagram socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: os._Environ[str] | dict[str, str]) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours)."""
    raw = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not raw:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None
