"""The lease keeper: the one task that renews, re-takes and gives up leases of held tracks.

Every `period` it renews all held leases in one round trip (the same script extends the track's TTL, so
the frame path never sends PEXPIRE). Verdicts: renewed; ours but Redis lost the state (a restart without
persistence) -> the whole track is written again, fenced; lost (another server holds it, or took it and
let it go) -> the registry ends the track here (MOVED). After an outage the same renewal decides: a
lease still ours (or lapsed with nobody else's epoch since) is re-taken and the held writes go through;
otherwise the lease-lost path runs. It also watches Redis latency: a p99 over `slow_p99_s` marks Redis
degraded in health and metrics before anything fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from lorat.v1 import tracker_pb2 as pb

from .log import event
from .registry import TrackRegistry
from .state import adapter
from .state.store import RENEW_LOST, RENEW_MISSING, RedisStateStore, StoreUnavailable


class LeaseKeeper:
    def __init__(self, store: RedisStateStore, registry: TrackRegistry, *, lease_ttl_s: float,
                 on_redis: Callable[[bool], None], on_latency: Callable[[float | None], None],
                 periodic: Callable[[], Awaitable[None]] | None = None, periodic_every_s: float = 5.0) -> None:
        self.store = store
        self.registry = registry
        self.period = max(0.05, min(1.0, lease_ttl_s / 3))
        self._on_redis = on_redis
        self._on_latency = on_latency
        self._periodic = periodic  # e.g. adopting orphaned pulled tracks
        self._periodic_every_s = periodic_every_s
        self._kick = asyncio.Event()
        self.renewals = 0

    def kick(self) -> None:
        """Renew now (the committer found a track without a lease)."""
        self._kick.set()

    async def run(self) -> None:
        next_periodic = 0.0
        while True:
            self._kick.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.period)
            try:
                await self.tick()
                self._on_redis(True)
                if self._periodic is not None and time.monotonic() >= next_periodic:
                    next_periodic = time.monotonic() + self._periodic_every_s
                    await self._periodic()
            except StoreUnavailable:
                self._on_redis(False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event("lease_keeper_error", 40, error=repr(exc))
            self._on_latency(self.store.latency_quantile(0.99))

    async def tick(self) -> None:
        held = [(t.track_id, t.epoch) for t in self.registry.tracks.values() if t.epoch and not t.ended]
        held += list(self.registry.claims.items())
        if not held:
            await self.store.ping()
            return
        verdicts = await self.store.renew(held)
        epochs = dict(held)
        self.renewals += 1
        for tid, (code, holder) in verdicts.items():
            track = self.registry.tracks.get(tid)
            if track is None or track.ended:
                # The track ended while this renewal was in flight. An end with a terminal status is safe (the
                # renewal script will not revive it); after a drain hand-off (stored as live) the renewal may have
                # re-created the lease that end() had just released: drop it again, fenced -- but only once the
                # end's own write has come back. Released earlier, the end would find no lease and not be
                # written (seen under load: an idle-ended track left TRACKING in Redis, its id refused).
                written = track is None or track.end_written
                if tid not in self.registry.claims and code != RENEW_LOST and written:
                    await self.store.release(tid, epochs[tid])
                continue
            if code == RENEW_MISSING:
                written = await self.store.save_full(
                    tid, track.epoch, track.meta_dict(), adapter.encode_state(track.state, track.counters()),
                    "TRACKING", await asyncio.to_thread(adapter.encode_template, track.state, track.model_id))
                if written == "":
                    track.needs_full = False
                    event("state_rewritten", track_id=tid, why="missing in redis")
            elif code == RENEW_LOST:
                track.mark_moved(holder or "another server")
                event("lease_lost", 30, track_id=tid, holder=holder, via="renewal")
                await self.registry.end(track, pb.MOVED, track.message)
