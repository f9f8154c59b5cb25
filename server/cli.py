"""`lorat-serve`: run the tracking service (see `lorat-serve --help` for every setting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from .malloc import cap_arenas
from .settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValueError as exc:
        print(f"lorat-serve: {exc}", file=sys.stderr)
        return 2
    cap_arenas()  # before torch, gRPC or any pool starts a thread (server/malloc.py)
    from .app import serve  # imports torch; keep --help fast

    code = 0
    try:
        asyncio.run(serve(settings))
    except (OSError, ValueError, RuntimeError) as exc:  # bad checkpoint, port in use, no redis-server ...
        print(f"lorat-serve: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    _exit_now(code)
    return code  # not reached


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: state is already in Redis and the sockets are closed, and
    the final garbage collection of torch's object graph took seconds (Ctrl-C felt hung). Logs are
    flushed first; this is what servers commonly do (os._exit after their own cleanup)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
