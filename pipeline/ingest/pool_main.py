"""The parse pool's forkserver imports the main script once, where Python itself does not.

Every process a forkserver forks runs the main script again (as `__mp_main__`) unless the
server has already imported it. Before Python 3.13 the server's own `"__main__"` preload
never receives the script's path (CPython gh-126631), so each parse worker ran the script
again: for `doctune`, importing `daemon.cli` and everything under it, ~0.1 CPU-s per worker
per reconcile. `share_main_path` (in the scanning process) hands the path over in an
environment variable the server inherits; imported in the server (`parse_pool._PRELOAD`),
this module imports the script from it as the fixed forkserver does, and workers forked
afterwards find it in place.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import process, spawn

__all__ = ["MAIN_PATH_ENV", "share_main_path"]

MAIN_PATH_ENV = "DOCTUNE_POOL_MAIN_PATH"

# Python 3.13 and later preload "__main__" in the forkserver themselves.
_BROKEN_PRELOAD = sys.version_info < (3, 13)


def share_main_path() -> None:
    """Put the main script's path, as workers will be given it, where the server finds it."""
    if not _BROKEN_PRELOAD:
        return
    path = spawn.get_preparation_data("pool").get("init_main_from_path")
    if path is None:  # no script (`-c`, `-m`): nothing to share, and no stale inherited path
        if MAIN_PATH_ENV in os.environ:
            del os.environ[MAIN_PATH_ENV]
    elif os.environ.get(MAIN_PATH_ENV) != path:
        os.environ[MAIN_PATH_ENV] = path


def _import_main() -> None:
    """In the server: import the shared script as `__mp_main__`, as Python 3.13's does."""
    path = os.environ.get(MAIN_PATH_ENV)
    # Where the script already is the main module (the scanning process itself, a worker
    # after its fix-up), there is nothing to do.
    if (
        not _BROKEN_PRELOAD
        or not path
        or getattr(sys.modules["__main__"], "__file__", None) == path
    ):
        return
    process.current_process()._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(path)
    except Exception:
        # The workers then run the script themselves, as before, and fail there with the
        # same error, which the scanning process logs (`parse_pool_broken`) and recovers from.
        pass
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]


_import_main()
