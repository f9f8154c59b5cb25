"""One way to open Redis for every part of the server: a single node, or a Redis Cluster
(`--redis-cluster`), where redis-py's cluster client follows MOVED/ASK, routes each command by its key's
slot and runs SCAN on every master."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

# What "Redis is unreachable or failing" looks like, on a single node or a cluster. redis-py's cluster errors
# (RedisClusterException: no startup node answered CLUSTER SLOTS, a slot not covered after the retries) do
# not derive from RedisError: catching RedisError alone let one escape the state store during a master
# failover on a loaded machine and end the commit task (every later result held until the process exited).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def redis_client(url: str, *, cluster: bool = False, timeout_s: float = 0.5) -> Any:
    """A `redis.asyncio.Redis`, or a `RedisCluster` when `cluster` (the URL names any one node)."""
    if cluster:
        # The cluster client keeps its own retries: after a failover a command may need a fresh slot map.
        return RedisCluster.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                     health_check_interval=0)
    # One retry on a broken connection only (a pooled connection from before a Redis restart); a timeout
    # is never retried, so a slow Redis costs one timeout, not two.
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)), health_check_interval=0)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
