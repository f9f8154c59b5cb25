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

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
