"""A real redis-server on a free loopback port: the same fixture the service tests use."""

from ..service.conftest import redis_proc  # noqa: F401  (fixture)
