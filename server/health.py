"""Supervision and health: what the gRPC health service says, and when the process gives up.

Health service names:
    ""  and  "lorat.v1.Tracker"   readiness: SERVING once the model is loaded, NOT_SERVING while loading,
                                   draining, full (it holds --max-tracks tracks: a balancer sends new
                                   tracks elsewhere; calls for its tracks still reach it, forwarded by
                                   other replicas), or when the engine is dead or hung
    "liveness"                     for Kubernetes' gRPC liveness probe: NOT_SERVING when the engine loop
                                   died or is hung (frames waited longer than --engine-stall-s with no batch
                                   completing); after --liveness-grace-s more the process exits with code 3
    "redis"                        SERVING while Redis answers with a p99 latency under --redis-slow-p99-ms;
                                   NOT_SERVING while it is unreachable or slow (tracks keep computing; their
                                   results wait for their state writes)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from .log import event
from .metrics import Metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READINESS = ("", "lorat.v1.Tracker")
EXIT_HUNG = 3


class HealthState:
    def __init__(self, servicer: health.aio.HealthServicer, metrics: Metrics, *, slow_p99_s: float) -> None:
        self.servicer = servicer
        self.metrics = metrics
        self.slow_p99_s = slow_p99_s
        self.ready = False
        self.alive = True
        self.full = False
        self.redis_up = True
        self.redis_slow = False
        self._tasks: set[asyncio.Task] = set()

    async def init(self) -> None:
        for name in (*READINESS, "liveness", "redis"):
            await self.servicer.set(name, NOT_SERVING)
        await self.servicer.set("liveness", SERVING)
        self.metrics.engine_alive.set(1)

    def _set(self, name: str, serving: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.servicer.set(name, SERVING if serving else NOT_SERVING))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        for name in READINESS:
            self._set(name, ready and self.alive and not self.full)

    def set_full(self, full: bool) -> None:
        """At capacity (--max-tracks): not ready for new work until a track ends."""
        if full == self.full:
            return
        self.full = full
        event("replica_full" if full else "replica_has_room", 20)
        self.set_ready(self.ready)

    def set_alive(self, alive: bool) -> None:
        if alive == self.alive:
            return
        self.alive = alive
        self.metrics.engine_alive.set(1 if alive else 0)
        self._set("liveness", alive)
        self.set_ready(self.ready)

    def redis(self, up: bool) -> None:
        if up != self.redis_up:
            event("redis_back" if up else "redis_down", 20 if up else 30)
        self.redis_up = up
        self._publish_redis()

    def redis_latency(self, p99: float | None) -> None:
        if p99 is not None:
            self.metrics.redis_latency_p99_seconds.set(p99)
        slow = p99 is not None and p99 > self.slow_p99_s
        if slow != self.redis_slow:
            event("redis_slow" if slow else "redis_fast", 30 if slow else 20, p99_ms=round((p99 or 0) * 1000, 1))
        self.redis_slow = slow
        self._publish_redis()

    def _publish_redis(self) -> None:
        degraded = (not self.redis_up) or self.redis_slow
        self.metrics.redis_degraded.set(1 if degraded else 0)
        self._set("redis", not degraded)


class Supervisor:
    """Watches the engine loop and committer tasks: dead or hung -> not alive -> exit after a grace."""

    def __init__(self, state: HealthState, *, tasks: Callable[[], list[asyncio.Task]],
                 oldest_wait: Callable[[], float], last_progress: Callable[[], float],
                 stall_s: float, grace_s: float, exit: Callable[[int], None] = os._exit,
                 full: Callable[[], bool] | None = None) -> None:
        self.state = state
        self._tasks = tasks
        self._oldest_wait = oldest_wait
        self._last_progress = last_progress
        self.stall_s = stall_s
        self.grace_s = grace_s
        self._exit = exit
        self._full = full  # at capacity -> readiness NOT_SERVING (checked every period)
        self._bad_since: float | None = None

    def problem(self) -> str:
        for task in self._tasks():
            if task.done():
                exc = None if task.cancelled() else task.exception()
                return f"task {task.get_name()} ended ({exc!r})"
        waited = self._oldest_wait()
        idle = time.monotonic() - self._last_progress()
        if waited > self.stall_s and idle > self.stall_s:
            return f"engine hung: a frame waited {waited:.1f}s and no batch completed for {idle:.1f}s"
        return ""

    async def run(self) -> None:
        period = max(0.05, min(1.0, self.stall_s / 4))
        while True:
            await asyncio.sleep(period)
            if self._full is not None:
                self.state.set_full(self._full())
            why = self.problem()
            if not why:
                if self._bad_since is not None:
                    event("engine_recovered")
                self._bad_since = None
                self.state.set_alive(True)
                continue
            if self._bad_since is None:
                self._bad_since = time.monotonic()
                event("engine_unhealthy", 50, why=why, exit_in_s=self.grace_s)
                self.state.set_alive(False)
            elif time.monotonic() - self._bad_since > self.grace_s:
                event("exiting_unhealthy", 50, why=why, code=EXIT_HUNG)
                self._exit(EXIT_HUNG)
                return
