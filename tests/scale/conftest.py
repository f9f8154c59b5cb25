"""The scale-out suite uses the service suite's real parts plus a real 3-node Redis Cluster."""

from __future__ import annotations

import pytest

from ..rtsp.conftest import rtsp_server  # noqa: F401  (fixture)
from ..service.conftest import checkpoint, engine  # noqa: F401  (fixtures)
from .cluster import RedisClusterProc


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    c = RedisClusterProc().start()
    yield c
    c.stop()
