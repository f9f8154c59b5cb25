"""`lorat-serve`: run the tracking service (see `lorat-serve --help` for every setting)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from .settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValueError as exc:
        print(f"lorat-serve: {exc}", file=sys.stderr)
        return 2
    from .app import serve  # imports torch; keep --help fast

    try:
        asyncio.run(serve(settings))
    except (OSError, ValueError, RuntimeError) as exc:  # bad checkpoint, port in use, no redis-server ...
        print(f"lorat-serve: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
