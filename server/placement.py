"""Placement of camera (pulled) tracks over live replicas, and the index adoption reads instead of a scan.

Nobody pushes to a camera track, so when its owner dies some other replica must take it over by itself.
Which one is decided by weighted rendezvous hashing (highest random weight) over the live replica set:
every replica scores every (track, replica) pair as `free / -ln(u)`, with `u` uniform in (0, 1) from a hash
of the pair and `free` the replica's free capacity (`--max-tracks` minus the tracks it holds, from the
replica registry; a full replica scores nothing). Every replica computes the same ranking from the same
registry, so without any coordination each orphan has one designated adopter, a replica's share is
proportional to its free room, and a replica that joins or leaves moves only its own share.

Views can differ for a moment (loads change between heartbeats). Two replicas that both think they won
race for the fenced lease (`acquire`): one gets it, the other moves on. A designated adopter that cannot
take the track (full, unable to reopen the camera, dead before its entry expired) leaves it to the
next-ranked replica: an orphan this replica has seen for `patience_s` may be taken by the next rank, and so
on, so no orphan is stranded. At most `per_cycle` adoptions per replica per cycle keep a mass failure
from turning into a thundering herd (and let loads be re-published between rounds).

The index: one Redis hash `p:pulled`, field = track id, value = "<instance> <nonce> <epoch>" of the
holder that wrote it. Written when a camera track starts or is adopted; every cycle each replica also
rewrites the entries of the camera tracks it holds (self-healing after a Redis outage) and removes the
entries it wrote for tracks it no longer holds (stopped or moved), each removal a compare-and-delete on the
exact value, so a fresh start of the same id (a new epoch) is never removed by a stale reader. A hash, not
a keyspace scan: one HGETALL per cycle instead of a SCAN over every master, and single-key commands only,
so it works unchanged on a Redis Cluster (the key lives in one slot; at start/stop rates that is no hot
spot; at tens of thousands of camera tracks it would want sharding).

An owner counts as gone when its registry entry is missing, carries another boot nonce (it restarted),
or has not beaten for `silent_s`; the fenced acquire then also needs its lease to have lapsed. A camera
track is therefore adopted within about max(`silent_s`, lease TTL) + one adoption period + the time to
reopen its source after its owner's death (docs/scale-out.md).
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from .errors import ServiceError
from .forward import forwarded
from .log import event
from .replicas import Replica, ReplicaRegistry
from .state.connect import REDIS_ERRORS

# KEYS: index; ARGV: field, value. Remove the entry only if it still reads `value` (compare-and-delete).
_DROP_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


def score(track_id: str, instance: str, weight: float) -> float:
    """Weighted rendezvous score of a (track, replica) pair: `weight / -ln(u)`, `u` uniform in (0, 1)."""
    if weight <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{track_id}\x00{instance}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64
    return weight / -math.log(u)


def ranking(track_id: str, free: dict[str, int]) -> list[str]:
    """Instances that have room, best first, for `track_id` (`free`: instance -> free capacity)."""
    scored = [(score(track_id, inst, room), inst) for inst, room in free.items() if room > 0]
    return [inst for _, inst in sorted(scored, key=lambda p: (-p[0], p[1]))]


@dataclass(frozen=True)
class Entry:
    instance: str
    nonce: str
    epoch: int

    @staticmethod
    def parse(value: Any) -> Entry | None:
        text = value.decode() if isinstance(value, bytes) else str(value)
        parts = text.rsplit(" ", 2)
        if len(parts) != 3:
            return None
        try:
            return Entry(parts[0], parts[1], int(parts[2]))
        except ValueError:
            return None

    def text(self) -> str:
        return f"{self.instance} {self.nonce} {self.epoch}"


class Placement:
    """The camera-track index and this replica's share of the orphans, cycle by cycle."""

    def __init__(self, redis: Any, replicas: ReplicaRegistry, *, prefix: str = "lorat", per_cycle: int = 4,
                 silent_s: float = 3.0, patience_s: float = 5.0) -> None:
        self.redis = redis
        self.replicas = replicas
        self.key = f"{prefix}:pulled"
        self.per_cycle = max(1, per_cycle)
        self.silent_s = silent_s
        self.patience_s = patience_s
        self._drop_if = redis.register_script(_DROP_IF)
        self._first_seen: dict[str, float] = {}  # orphan id -> when this replica first saw it orphaned
        self._seen: dict[str, Entry] = {}  # the index as read this cycle

    def mine(self, epoch: int) -> str:
        return Entry(self.replicas.instance, self.replicas.nonce, epoch).text()

    async def indexed(self, track_id: str, epoch: int) -> None:
        """Record that this replica holds camera track `track_id` under `epoch` (start, adoption). Redis
        away: the next cycle's sweep writes it."""
        try:
            await self.redis.hset(self.key, track_id, self.mine(epoch))
        except REDIS_ERRORS as exc:
            event("placement_index_failed", 30, track_id=track_id, error=type(exc).__name__)

    async def entries(self) -> dict[str, Entry]:
        raw = await self.redis.hgetall(self.key)
        out: dict[str, Entry] = {}
        for field, value in raw.items():
            entry = Entry.parse(value)
            if entry is not None:
                out[field.decode() if isinstance(field, bytes) else str(field)] = entry
        return out

    def _gone(self, entry: Entry, live: dict[str, Replica], now_ms: int) -> bool:
        replica = live.get(entry.instance)
        return (replica is None or replica.nonce != entry.nonce
                or now_ms - replica.updated_ms > self.silent_s * 1000)

    async def orphans(self, held: dict[str, int], busy: Iterable[str], load: int) -> list[str]:
        """This cycle's camera tracks for this replica to try to adopt (at most `per_cycle`), after
        bringing its own index entries up to date. `held`: camera track id -> epoch held here; `busy`:
        ids being started or otherwise taken here; `load`: tracks held here now (its free room). Redis
        away: none this cycle."""
        try:
            return await self._orphans(held, set(busy), load)
        except REDIS_ERRORS as exc:
            event("placement_failed", 30, error=type(exc).__name__)
            return []

    async def _orphans(self, held: dict[str, int], busy: set[str], load: int) -> list[str]:
        self._seen = entries = await self.entries()
        for tid, epoch in held.items():  # ours, as they should read (self-healing)
            if (e := entries.get(tid)) is None or e.text() != self.mine(epoch):
                await self.indexed(tid, epoch)
        skip = set(held) | busy
        for tid, e in entries.items():  # ours no more (stopped, moved): compare-and-delete
            if tid not in skip and e.instance == self.replicas.instance and e.nonce == self.replicas.nonce:
                await self._drop_if(keys=[self.key], args=[tid, e.text()])
        live = {r.instance: r for r in await self.replicas.live()}
        now_ms = int(time.time() * 1000)
        free = {inst: r.free for inst, r in live.items() if not self._gone(Entry(inst, r.nonce, 0), live, now_ms)}
        free[self.replicas.instance] = max(0, self.replicas.capacity - load)  # our own count is current
        orphaned = [tid for tid, e in entries.items() if tid not in skip and self._gone(e, live, now_ms)]
        now = time.monotonic()
        self._first_seen = {tid: self._first_seen.get(tid, now) for tid in orphaned}
        chosen: list[str] = []
        for tid in sorted(orphaned):
            ranks = ranking(tid, free)
            allowed = 1 + int((now - self._first_seen[tid]) / self.patience_s)  # widen as it waits
            if self.replicas.instance in ranks[:allowed]:
                chosen.append(tid)
                if len(chosen) >= self.per_cycle:
                    break
        return chosen

    async def adopted(self, track_id: str, epoch: int) -> None:
        """This replica took `track_id` over under `epoch`: index it as ours."""
        self._first_seen.pop(track_id, None)
        await self.indexed(track_id, epoch)

    async def stale(self, track_id: str) -> None:
        """An orphan that is no camera track to adopt any more (ended, or its state expired): remove its
        entry, only if it still reads what this cycle read."""
        entry = self._seen.pop(track_id, None)
        self._first_seen.pop(track_id, None)
        if entry is None:
            return
        try:
            await self._drop_if(keys=[self.key], args=[track_id, entry.text()])
        except REDIS_ERRORS as exc:
            event("placement_index_failed", 30, track_id=track_id, error=type(exc).__name__)

    async def winner(self, track_id: str, load: int) -> str | None:
        """Where a new camera track should start instead of here (`load`: tracks held here now), or None:
        here. It stays here unless another live replica has at least twice this one's free room (or this
        one is full): a balanced cluster pays no extra hop, an unbalanced one fills its emptier replicas.
        Among those, the rendezvous winner weighted by free room. Redis away: here."""
        try:
            live = {r.instance: r for r in await self.replicas.live()}
        except REDIS_ERRORS:
            return None
        now_ms = int(time.time() * 1000)
        mine = max(0, self.replicas.capacity - load)
        roomier = {inst: r.free for inst, r in live.items() if inst != self.replicas.instance
                   and not self._gone(Entry(inst, r.nonce, 0), live, now_ms) and r.free >= max(1, 2 * mine)}
        ranks = ranking(track_id, roomier)
        return ranks[0] if ranks else None


async def start_elsewhere(manager: Any, forwarder: Any, request: Any, context: Any) -> Any:
    """A new camera track's StartTrack on the replica placement picks (the StartTrackResponse), or None:
    start it here (a push track, no placement, a forwarded call, this replica wins, the winner unreachable
    or full by now). An RTSP start waits for the camera's first frame, so the caller's own deadline is
    passed on, not the forwarder's cap for an owner that does not answer."""
    placement = manager.placement
    if (placement is None or forwarder is None or request.WhichOneof("source") != "rtsp" or manager.draining
            or forwarded(context)):
        return None
    if not request.track_id:
        request.track_id = uuid.uuid4().hex[:16]
    winner = await placement.winner(request.track_id, len(manager.registry) + len(manager.registry.reserved))
    if winner is None:
        return None
    try:
        address = await placement.replicas.address_of(winner)
    except REDIS_ERRORS:
        return None
    if address is None or address == placement.replicas.address:
        return None
    remaining = context.time_remaining()
    try:
        reply = await forwarder.stub(address).StartTrack(
            request, metadata=forwarder.metadata(context),
            timeout=remaining if remaining is not None else manager.settings.rtsp_start_timeout_s + 30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return None  # gone, draining, or full since its last heartbeat: start it here
        raise ServiceError(exc.code(), exc.details() or "") from None
    forwarder.count("StartTrack")
    event("track_placed", track_id=request.track_id, replica=winner)
    return reply
