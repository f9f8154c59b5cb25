"""The fault suite uses the service suite's real parts (redis-server, `python -m server`, tiny checkpoint)."""

from __future__ import annotations

from ..service.conftest import checkpoint, engine, redis_proc  # noqa: F401  (fixtures)
