"""Track state in Redis: metadata + last state (a hash), template tokens (binary), an ownership lease.

Keys (prefix `p`, default "lorat"):
    p:track:{id}   hash  meta (JSON: source, options, labels, model id, created), state (JSON: box, pad
                         colour, frame counters, status)
    p:tokens:{id}  bytes template tokens, see `codec.py`
    p:lease:{id}   str   owner instance id, SET NX PX; refreshed while the owner is alive

All keys expire `track_ttl` after the last write/refresh. Every failure raises `StoreUnavailable` after
counting it, so callers keep tracking in memory and retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..log import event

# KEYS: lease; ARGV: owner, lease_ms. Returns the owner after the call.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""

# KEYS: lease, track, tokens; ARGV: owner, lease_ms, ttl_ms.
# Returns 0 ok, 1 state missing (Redis lost it: rewrite), 2 lease held by another owner.
_REFRESH = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local a = redis.call('PEXPIRE', KEYS[2], ARGV[3])
local b = redis.call('PEXPIRE', KEYS[3], ARGV[3])
if a == 0 or b == 0 then return 1 end
return 0
"""

# KEYS: lease; ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

REFRESH_OK, REFRESH_MISSING, REFRESH_LOST = 0, 1, 2


class StoreUnavailable(RuntimeError):
    """Redis could not be reached or answered with an error."""


@dataclass
class StoredTrack:
    meta: dict[str, Any]
    state: dict[str, Any]
    tokens: bytes | None


class RedisStateStore:
    def __init__(self, url: str, owner: str, *, prefix: str = "lorat", track_ttl_s: float = 3600.0,
                 lease_ttl_s: float = 10.0, timeout_s: float = 0.5,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.owner = owner
        self.prefix = prefix
        self.ttl_ms = max(1, int(track_ttl_s * 1000))
        self.lease_ms = max(1, int(lease_ttl_s * 1000))
        self._on_error = on_error or (lambda op: None)
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._release = self._redis.register_script(_RELEASE)

    def _k(self, kind: str, track_id: str) -> str:
        return f"{self.prefix}:{kind}:{track_id}"

    async def _guard(self, op: str, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._on_error(op)
            event("redis_error", 30, op=op, error=f"{type(exc).__name__}: {exc}")
            raise StoreUnavailable(f"redis {op} failed: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._guard("ping", self._redis.ping()))

    async def acquire_lease(self, track_id: str) -> str:
        """Take the lease if free or ours; returns the owner afterwards (== self.owner on success)."""
        owner = await self._guard("acquire_lease", self._acquire(
            keys=[self._k("lease", track_id)], args=[self.owner, self.lease_ms]))
        return owner.decode() if isinstance(owner, bytes) else str(owner)

    async def lease_owner(self, track_id: str) -> str | None:
        owner = await self._guard("get_lease", self._redis.get(self._k("lease", track_id)))
        return owner.decode() if owner else None

    async def release_lease(self, track_id: str) -> None:
        await self._guard("release_lease", self._release(keys=[self._k("lease", track_id)], args=[self.owner]))

    async def save_full(self, track_id: str, meta: dict, state: dict, tokens: bytes | None) -> None:
        """Write everything about a track (start, and rewrite after Redis lost it)."""
        pipe = self._redis.pipeline(transaction=True)
        key = self._k("track", track_id)
        pipe.hset(key, mapping={"meta": json.dumps(meta), "state": json.dumps(state)})
        pipe.pexpire(key, self.ttl_ms)
        if tokens is not None:
            pipe.set(self._k("tokens", track_id), tokens, px=self.ttl_ms)
        else:
            pipe.delete(self._k("tokens", track_id))
        await self._guard("save_full", pipe.execute())

    async def save_states(self, states: Iterable[tuple[str, dict]]) -> None:
        """The per-frame write: last state of several tracks in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        n = 0
        for track_id, state in states:
            key = self._k("track", track_id)
            pipe.hset(key, "state", json.dumps(state))
            pipe.pexpire(key, self.ttl_ms)
            n += 1
        if n:
            await self._guard("save_state", pipe.execute())

    async def load(self, track_id: str) -> StoredTrack | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._k("track", track_id))
        pipe.get(self._k("tokens", track_id))
        fields, tokens = await self._guard("load", pipe.execute())
        if not fields or b"meta" not in fields or b"state" not in fields:
            return None
        try:
            meta = json.loads(fields[b"meta"])
            state = json.loads(fields[b"state"])
        except ValueError as exc:
            raise StoreUnavailable(f"stored state of {track_id} is not valid JSON: {exc}") from exc
        return StoredTrack(meta=meta, state=state, tokens=tokens)

    async def track_ids(self, limit: int = 100_000) -> list[str]:
        """Ids of every track with state in Redis (SCAN, so Redis is never blocked)."""
        prefix = f"{self.prefix}:track:"
        ids: list[str] = []

        async def scan() -> None:
            async for key in self._redis.scan_iter(match=prefix + "*", count=500):
                ids.append(key.decode()[len(prefix):])
                if len(ids) >= limit:
                    return

        await self._guard("scan", scan())
        return ids

    async def refresh(self, track_ids: list[str]) -> dict[str, int]:
        """Extend leases and TTLs of owned tracks; -> {track_id: REFRESH_*}."""
        if not track_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for tid in track_ids:
            await self._refresh(keys=[self._k("lease", tid), self._k("track", tid), self._k("tokens", tid)],
                          args=[self.owner, self.lease_ms, self.ttl_ms], client=pipe)
        codes = await self._guard("refresh", pipe.execute())
        return {tid: int(code) for tid, code in zip(track_ids, codes)}

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection is not worth a failure
            await self._redis.aclose()
