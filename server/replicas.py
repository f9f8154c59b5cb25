"""Replicas that know each other: each server registers itself in Redis and keeps the entry alive with a
heartbeat, so another replica can find a track's owner by name (its lease names the instance id and boot
nonce) and reach it at its advertised address (server/forward.py); camera tracks are placed over the live
entries by free capacity (server/placement.py).

Keys (prefix `p`): `p:replica:{<instance>}` (hash: nonce, address, load, capacity, updated ms; expires
`ttl` after the last beat) and `p:replicas` (set of instance ids: the index, expiring `ttl` after the last
beat of any replica; members whose hash expired are removed by readers). Each key is touched by single-key
commands only, so they work on a Redis Cluster.

The boot nonce (random per process) tells two processes with the same `--instance-id` apart: a server whose
id is held by a live entry with another nonce refuses to start (`DuplicateInstance`), after waiting one entry
TTL so that a restarted pod whose previous process was killed does start; a running server that finds its
entry taken over logs `event=duplicate_instance` at every beat and never overwrites the other's entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .log import event
from .state.connect import REDIS_ERRORS, is_cluster

# KEYS: entry; ARGV: nonce, address, load, capacity, now_ms, ttl_ms, may_create (1/0).
# -> "" (written) | the other nonce (the id is taken by another live process)
_BEAT = """
local cur = redis.call('HGET', KEYS[1], 'nonce')
if cur and cur ~= ARGV[1] then return cur end
if not cur and ARGV[7] ~= '1' then return '' end
redis.call('HSET', KEYS[1], 'nonce', ARGV[1], 'address', ARGV[2], 'load', ARGV[3], 'capacity', ARGV[4],
           'updated', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return ''
"""

# KEYS: entry; ARGV: nonce. Remove the entry only if it is ours.
_LEAVE = """
if redis.call('HGET', KEYS[1], 'nonce') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DuplicateInstance(RuntimeError):
    """Another live process registered this instance id."""


@dataclass(frozen=True)
class Replica:
    instance: str
    nonce: str
    address: str
    load: int
    capacity: int
    updated_ms: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ReplicaRegistry:
    """This server's entry (register, beat, leave) and a cached view of the others."""

    def __init__(self, redis: Any, instance: str, address: str, capacity: int, load: Callable[[], int], *,
                 prefix: str = "lorat", interval_s: float = 1.0, ttl_s: float = 10.0, nonce: str = "") -> None:
        self.redis = redis
        self.instance = instance
        self.nonce = nonce or uuid.uuid4().hex[:12]  # the state store's: leases name the same nonce
        self.address = address
        self.capacity = capacity
        self._load = load
        self.prefix = prefix
        self.interval_s = interval_s
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.conflict = ""  # the other process's nonce once our id was taken over
        self._beat = redis.register_script(_BEAT)
        self._leave = redis.register_script(_LEAVE)
        self._task: asyncio.Task[None] | None = None
        self._addresses: dict[str, tuple[float, str | None]] = {}

    def entry_key(self, instance: str) -> str:
        return f"{self.prefix}:replica:{{{instance}}}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:replicas"

    async def _write(self, may_create: bool) -> str:
        other = await self._beat(keys=[self.entry_key(self.instance)], args=[
            self.nonce, self.address, self._load(), self.capacity, int(time.time() * 1000), self.ttl_ms,
            "1" if may_create else "0"])
        other = _s(other) if other else ""
        if not other:  # the index expires with the last live replica: nothing without a TTL remains
            await self.redis.sadd(self.index_key, self.instance)
            await self.redis.pexpire(self.index_key, self.ttl_ms)
        return other

    async def register(self) -> None:
        """Claim the instance id; raises DuplicateInstance while another live process holds it. A holder
        that stops beating (this pod's previous process, SIGKILLed) is waited out: its entry expires."""
        deadline = time.monotonic() + self.ttl_ms / 1000 + 1.0
        while True:
            try:
                other = await self._write(may_create=True)
            except REDIS_ERRORS as exc:  # Redis away: start, register when back
                event("replica_register_failed", 30, error=type(exc).__name__, note="retried at every heartbeat")
                other = ""
            if not other or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if other:
            raise DuplicateInstance(
                f"instance id {self.instance!r} is registered by another live server (boot nonce {other}); "
                f"give every replica its own --instance-id (e.g. the pod name), or wait "
                f"{self.ttl_ms / 1000:g}s after the other one stopped")
        event("replica_registered", instance=self.instance, nonce=self.nonce, address=self.address,
              capacity=self.capacity)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replica-heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                # Re-create the entry if it expired (a Redis outage or restart), never over another nonce.
                other = await self._write(may_create=True)
            except REDIS_ERRORS as exc:
                event("replica_heartbeat_failed", 30, error=type(exc).__name__)
                continue
            if other:
                self.conflict = other
                event("duplicate_instance", 40, instance=self.instance, nonce=self.nonce, other_nonce=other,
                      note="another live server registered this --instance-id; leases are shared: fix it")

    async def close(self) -> None:
        """Stop beating and remove our entry (drain): others stop forwarding here at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(*REDIS_ERRORS):
            await self._leave(keys=[self.entry_key(self.instance)], args=[self.nonce])
            await self.redis.srem(self.index_key, self.instance)

    async def get(self, instance: str) -> Replica | None:
        fields = await self.redis.hgetall(self.entry_key(instance))
        if not fields or b"address" not in fields:
            return None
        try:
            return Replica(instance=instance, nonce=_s(fields[b"nonce"]), address=_s(fields[b"address"]),
                           load=int(fields.get(b"load", b"0")), capacity=int(fields.get(b"capacity", b"0")),
                           updated_ms=int(fields.get(b"updated", b"0")))
        except (KeyError, ValueError):
            return None

    async def address_of(self, instance: str, max_age_s: float = 1.0) -> str | None:
        """A live replica's advertised address (cached for `max_age_s`); None when it is not registered."""
        now = time.monotonic()
        hit = self._addresses.get(instance)
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
        replica = await self.get(instance)
        address = replica.address if replica is not None else None
        if len(self._addresses) > 1024:
            self._addresses.clear()
        self._addresses[instance] = (now, address)
        return address

    def forget(self, instance: str) -> None:
        self._addresses.pop(instance, None)

    async def live(self) -> list[Replica]:
        """Every registered replica (one SMEMBERS, then one HGETALL each); stale index entries removed."""
        members = sorted(_s(m) for m in await self.redis.smembers(self.index_key))
        if is_cluster(self.redis):
            found = await asyncio.gather(*(self.get(m) for m in members))
        else:
            found = [await self.get(m) for m in members]
        gone = [m for m, r in zip(members, found) if r is None]
        if gone:
            await self.redis.srem(self.index_key, *gone)
        return [r for r in found if r is not None]
