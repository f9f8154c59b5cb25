"""The unary calls a server is answering, so that a SIGTERM finishes them instead of cutting them.

Why: `grpc.aio.Server.stop(grace)` cancels every call still running when the grace ends, and the caller
then reads CANCELLED, a status that says "you gave up", not "retry". The calls still running after the
drain are mostly forwarded ones (server/forward.py): this replica waits for the track's owner, which may be
busy or draining itself. So the SIGTERM path waits for them (`finish`, up to --drain-timeout-s) before it
stops the gRPC server, and a call that outlives even that is answered UNAVAILABLE ("retry"; with a
`lorat-push-id` the retry gets the owner's result, server/idempotency.py), never CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlightCalls:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._cut: set[asyncio.Task] = set()  # cancelled by `finish`, not by their callers
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Around one handler: it counts as in flight until it returns."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._tasks.discard(task)
            self._cut.discard(task)
            if not self._tasks:
                self._idle.set()

    def was_cut(self) -> bool:
        """In a handler's CancelledError: True when `finish` cancelled it (the server is stopping), so the
        handler answers UNAVAILABLE instead of letting the cancellation through (its caller is still there)."""
        task = asyncio.current_task()
        if task in self._cut:
            task.uncancel()  # type: ignore[union-attr]  # the handler answers; the task ends normally
            return True
        return False

    async def finish(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for the calls in flight; cancel the rest (they answer UNAVAILABLE).
        -> how many were cut."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        left = list(self._tasks)
        for task in left:
            self._cut.add(task)
            task.cancel()
        if left:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 1.0)
        return len(left)
