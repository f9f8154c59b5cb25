"""Structured logs: one line per event, `key=value` fields, `track_id=` on every line about a track."""

from __future__ import annotations

import logging
import sys
from typing import Any

_LOGGER = logging.getLogger("lorat.server")


def _fmt(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "='):
        return '"' + text.replace('"', "'") + '"'
    return text


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s %(message)s"))
    root = logging.getLogger("lorat")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event=name k=v ...` (fields with None values are left out)."""
    if not _LOGGER.isEnabledFor(level):
        return
    parts = [f"event={name}"] + [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    _LOGGER.log(level, " ".join(parts))
