"""Track state in Redis, fenced by leases: one owner per track, and a stale owner can write nothing.

Keys (prefix `p`, default "lorat"; `{id}` is a Redis Cluster hash tag, so one track's keys share a slot
and every script below touches a single slot):
    p:track:{id}   hash  meta (JSON: source, options, labels, model id, created), state (binary record:
                         box, padding colour, counters; see state/adapter.py), template (binary record:
                         template tokens), status (TRACKING / STOPPED / FAILED / MOVED), epoch (integer)
    p:lease:{id}   str   "<instance> <nonce> <epoch>", SET PX lease_ttl; renewed by the owner's lease keeper.
                         The boot nonce (random per process, also in the replica registry) tells two
                         processes with the same instance id apart: a restarted or duplicated process never
                         renews or writes through its predecessor's lease, and the epoch still fences
                         every write. A value without a nonce ("<instance> <epoch>", the layout before it)
                         is read as held by that instance.

The hash's `layout` field is the data layout version (LAYOUT): 1 (absent) is the layout before the field
existed, read as is; a track written by a newer layout is refused with a clear message (state/restore.py),
so a rolling upgrade never misreads state.

On a Redis Cluster (`cluster=True`, state/connect.py) every script touches the keys of one track, i.e. one
slot; a batch's scripts go out concurrently (redis-py blocks EVALSHA in cluster pipelines), each routed to
its slot's master.

The epoch is a fencing token: it grows by one every time a server takes a track, and every write is a
Lua script that first checks that the lease still reads "<instance> <nonce> <epoch>" -- check and write in the same
round trip, so a server that was paused, partitioned or slow cannot overwrite its successor.

A live track's hash expires `track_ttl` after its owner's last renewal; an ended track's after
`ended_retention`. Every failure raises `StoreUnavailable` after counting it; every operation's latency
is recorded (`latency_quantile`) so a slow Redis is seen before it fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from ..log import event
from ..urlpolicy import redact
from .connect import REDIS_ERRORS, redis_client

LAYOUT = 2  # the data layout version written in every track hash (see the module docstring)

TERMINAL = ("STOPPED", "FAILED", "MOVED", "STARTING")

# KEYS: lease, track; ARGV: holder ("<instance> <nonce>"), lease_ms, ttl_ms. A new track under a
# caller-chosen id, atomically: refused while anyone holds the lease or the stored track is live.
# -> {1, epoch} | {0, holder-or-""}
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local st = redis.call('HGET', KEYS[2], 'status')
if st and st ~= 'STOPPED' and st ~= 'FAILED' and st ~= 'MOVED' and st ~= 'STARTING' then return {0, ''} end
local e = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') + 1
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'epoch', e, 'status', 'STARTING')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e, 'PX', ARGV[2])
return {1, e}
"""

# KEYS: lease, track; ARGV: holder ("<instance> <nonce>"), lease_ms. Take over a stored live track whose lease is free.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
if redis.call('HEXISTS', KEYS[2], 'meta') == 0 then return {0, ''} end
local e = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e, 'PX', ARGV[2])
return {1, e}
"""

# KEYS: lease, track; ARGV: holder ("<instance> <nonce>"), epoch, lease_ms, ttl_ms. -> {code, holder}
# 0 ok; 1 ours but Redis lost the state (rewrite it); 2 lost (holder, or "" when another epoch came and went,
# or the track has ended: a renewal that crosses its own track's end must not revive the lease, nor put the
# live TTL back on a hash that END gave the retention TTL)
_RENEW = """
local mine = ARGV[1] .. ' ' .. ARGV[2]
local cur = redis.call('GET', KEYS[1])
if cur == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('PEXPIRE', KEYS[2], ARGV[4]) == 0 then return {1, ''} end
  return {0, ''}
end
if cur then return {2, cur} end
local stored = redis.call('HMGET', KEYS[2], 'epoch', 'status')
local te, st = stored[1], stored[2]
if te and te ~= ARGV[2] then return {2, ''} end
if st == 'STOPPED' or st == 'FAILED' or st == 'MOVED' then return {2, ''} end
redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
if not te then return {1, ''} end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {0, ''}
"""

# KEYS: lease, track; ARGV: token, state, status. The per-batch write. -> 1 | holder | false (no lease)
_SAVE_STATE = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return cur end
redis.call('HSET', KEYS[2], 'state', ARGV[2], 'status', ARGV[3])
return 1
"""

# KEYS: lease, track; ARGV: token, meta, state, status, template ("" keeps it), ttl_ms, epoch, layout.
_SAVE_FULL = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return cur end
redis.call('HSET', KEYS[2], 'meta', ARGV[2], 'state', ARGV[3], 'status', ARGV[4], 'epoch', ARGV[7],
           'layout', ARGV[8])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'template', ARGV[5]) end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""

# KEYS: lease, track; ARGV: token, state ("" keeps it), status, retention_ms. Final write + release.
_END = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return cur end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'state', ARGV[2]) end
redis.call('HSET', KEYS[2], 'status', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lease; ARGV: token. Drop the lease only if it is still ours (this token) -> 1 | 0.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RENEW_OK, RENEW_MISSING, RENEW_LOST = 0, 1, 2


class StoreUnavailable(RuntimeError):
    """Redis could not be reached or answered with an error."""


class _ScriptMissing(Exception):
    """EVALSHA of a script Redis does not hold (a fresh or restarted Redis): load it, not an outage."""


async def _execute(pipe: Any) -> Any:
    try:
        return await pipe.execute()
    except NoScriptError:
        raise _ScriptMissing() from None


@dataclass(frozen=True)
class Claim:
    ok: bool
    epoch: int = 0
    holder: str = ""  # the owner holding the lease when not ok ("" when none: the track exists unowned)


@dataclass
class StoredTrack:
    meta: dict[str, Any]
    state: bytes
    template: bytes | None
    status: str
    epoch: int
    layout: int = 1  # the data layout version it was written in (1: before the field existed)


_NONCE = re.compile(r"[0-9a-f]{12}")


def new_nonce() -> str:
    """A process's boot nonce (the lease value and the replica registry carry it)."""
    return uuid.uuid4().hex[:12]


def lease_parts(value: Any) -> tuple[str, str]:
    """(instance, nonce) of a lease value "<instance> <nonce> <epoch>"; nonce "" for the older
    "<instance> <epoch>"; ("", "") for none."""
    if value is None or value is False:
        return "", ""
    text = value.decode() if isinstance(value, bytes) else str(value)
    head = text.rsplit(" ", 1)[0]
    instance, _, nonce = head.rpartition(" ")
    if instance and _NONCE.fullmatch(nonce):
        return instance, nonce
    return head, ""


def holder_name(value: Any) -> str:
    """The instance part of a lease value (the name other replicas find its address under)."""
    return lease_parts(value)[0]


class RedisStateStore:
    def __init__(self, url: str, owner: str, *, prefix: str = "lorat", track_ttl_s: float = 3600.0,
                 lease_ttl_s: float = 10.0, ended_retention_s: float = 600.0, timeout_s: float = 0.5,
                 on_error: Callable[[str], None] | None = None,
                 on_latency: Callable[[str, float], None] | None = None, cluster: bool = False,
                 nonce: str = "") -> None:
        self.owner = owner  # the instance id
        self.nonce = nonce or new_nonce()
        self.holder = f"{owner} {self.nonce}"  # what the lease names: instance and boot nonce
        self.prefix = prefix
        self.ttl_ms = max(1, int(track_ttl_s * 1000))
        self.lease_ms = max(1, int(lease_ttl_s * 1000))
        self.retention_ms = max(1, int(ended_retention_s * 1000))
        self._on_error = on_error or (lambda op: None)
        self._on_latency = on_latency or (lambda op, s: None)
        self._latencies: collections.deque[tuple[float, float]] = collections.deque(maxlen=2048)
        self.cluster = cluster
        self._redis = redis_client(url, cluster=cluster, timeout_s=timeout_s)
        self._claim = self._redis.register_script(_CLAIM)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._save_state = self._redis.register_script(_SAVE_STATE)
        self._save_full = self._redis.register_script(_SAVE_FULL)
        self._end = self._redis.register_script(_END)
        self._release = self._redis.register_script(_RELEASE)

    def track_key(self, track_id: str) -> str:
        return f"{self.prefix}:track:{{{track_id}}}"

    def lease_key(self, track_id: str) -> str:
        return f"{self.prefix}:lease:{{{track_id}}}"

    def token(self, epoch: int) -> str:
        return f"{self.holder} {epoch}"

    def _keys(self, track_id: str) -> list[str]:
        return [self.lease_key(track_id), self.track_key(track_id)]

    async def _guard(self, op: str, coro: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await coro
        except REDIS_ERRORS as exc:
            self._on_error(op)
            event("redis_error", 30, op=op, error=redact(f"{type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception):  # no stale pooled connection outlives an outage
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            raise StoreUnavailable(redact(f"redis {op} failed: {exc}")) from exc
        finally:
            seconds = time.monotonic() - t0
            self._latencies.append((t0, seconds))
            self._on_latency(op, seconds)

    def latency_quantile(self, q: float = 0.99, window_s: float = 10.0) -> float | None:
        """The q-quantile of operation latencies that started in the last `window_s` (None: none)."""
        since = time.monotonic() - window_s
        recent = sorted(s for t, s in self._latencies if t >= since)
        if not recent:
            return None
        return recent[min(len(recent) - 1, int(q * len(recent)))]

    async def _pipelined(self, op: str, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Many calls of one script in one round trip: plain EVALSHA (redis-py would add a SCRIPT EXISTS
        round trip to every pipeline); after a Redis restart lost the script, load it and go again. On a
        cluster: the calls run concurrently, each on its slot's master (the script object loads itself)."""
        if self.cluster:
            return list(await self._guard(op, asyncio.gather(
                *(script(keys=keys, args=args) for keys, args in calls))))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return await self._guard(op, _execute(pipe))
            except _ScriptMissing:
                if attempt:
                    raise StoreUnavailable(f"redis {op}: script missing after loading it") from None
                script.sha = await self._guard("script_load", self._redis.script_load(script.script))
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        return bool(await self._guard("ping", self._redis.ping()))

    # -- leases -----------------------------------------------------------------------------------------

    async def claim(self, track_id: str) -> Claim:
        """A new track under `track_id`: atomic across replicas (no check-then-act)."""
        ok, value = await self._guard("claim", self._claim(
            keys=self._keys(track_id), args=[self.holder, self.lease_ms, self.ttl_ms]))
        return Claim(True, int(value)) if ok else Claim(False, holder=holder_name(value))

    async def acquire(self, track_id: str) -> Claim:
        """Take over a stored live track whose lease is free (resume, adoption)."""
        ok, value = await self._guard("acquire", self._acquire(
            keys=self._keys(track_id), args=[self.holder, self.lease_ms]))
        return Claim(True, int(value)) if ok else Claim(False, holder=holder_name(value))

    async def renew(self, held: Iterable[tuple[str, int]]) -> dict[str, tuple[int, str]]:
        """Extend the leases and TTLs of held tracks in one round trip; -> {id: (RENEW_*, holder)}."""
        held = list(held)
        if not held:
            return {}
        replies = await self._pipelined("renew", self._renew, [
            (self._keys(tid), [self.holder, epoch, self.lease_ms, self.ttl_ms]) for tid, epoch in held])
        return {tid: (int(code), holder_name(holder) if holder else "")
                for (tid, _), (code, holder) in zip(held, replies)}

    async def release(self, track_id: str, epoch: int) -> None:
        """Drop a lease this server still holds with `epoch` (nothing else is touched)."""
        await self._guard("release", self._release(keys=[self.lease_key(track_id)], args=[self.token(epoch)]))

    async def lease_holder(self, track_id: str) -> str:
        return holder_name(await self._guard("get_lease", self._redis.get(self.lease_key(track_id))))

    # -- fenced writes: each -> "" when written, else the holder ("?" when no lease at all) --------------

    @staticmethod
    def _verdict(reply: Any) -> str:
        if reply == 1:
            return ""
        return holder_name(reply) or "?"

    async def save_states(self, writes: list[tuple[str, int, bytes, str]]) -> list[str]:
        """The per-batch write of (track id, epoch, state record, status), one round trip, no PEXPIRE."""
        if not writes:
            return []
        replies = await self._pipelined("save_state", self._save_state, [
            (self._keys(tid), [self.token(epoch), blob, status]) for tid, epoch, blob, status in writes])
        return [self._verdict(r) for r in replies]

    async def save_full(self, track_id: str, epoch: int, meta: dict, state: bytes, status: str,
                        template: bytes | None) -> str:
        reply = await self._guard("save_full", self._save_full(
            keys=self._keys(track_id),
            args=[self.token(epoch), json.dumps(meta), state, status, template or b"", self.ttl_ms, epoch,
                  LAYOUT]))
        return self._verdict(reply)

    async def end(self, track_id: str, epoch: int, state: bytes | None, status: str, live: bool = False) -> str:
        """Final state + status, lease released -- only while the lease is ours. An ended track's hash
        expires after `ended_retention`; a `live` one (drain hand-off) keeps the track TTL."""
        keep = self.ttl_ms if live else self.retention_ms
        reply = await self._guard("end", self._end(
            keys=self._keys(track_id), args=[self.token(epoch), state or b"", status, keep]))
        return self._verdict(reply)

    # -- reads ------------------------------------------------------------------------------------------

    async def load(self, track_id: str) -> StoredTrack | None:
        fields = await self._guard("load", self._redis.hgetall(self.track_key(track_id)))
        if not fields or b"meta" not in fields or b"state" not in fields:
            return None
        try:
            meta = json.loads(fields[b"meta"])
        except ValueError as exc:
            raise StoreUnavailable(f"stored metadata of {track_id} is not valid JSON: {exc}") from exc
        return StoredTrack(meta=meta, state=fields[b"state"], template=fields.get(b"template"),
                           status=fields.get(b"status", b"").decode(), epoch=int(fields.get(b"epoch", b"0")),
                           layout=int(fields.get(b"layout", b"1")))

    async def track_ids(self, limit: int = 100_000) -> list[str]:
        """Ids of every track with state in Redis (SCAN, so Redis is never blocked)."""
        prefix = f"{self.prefix}:track:{{"
        ids: list[str] = []

        async def scan() -> None:
            async for key in self._redis.scan_iter(match=prefix + "*", count=500):
                ids.append(key.decode()[len(prefix):-1])
                if len(ids) >= limit:
                    return

        await self._guard("scan", scan())
        return ids

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection is not worth a failure
            await self._redis.aclose()
