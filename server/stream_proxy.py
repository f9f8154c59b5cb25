"""PushFrames from any replica: the frames of a caller's stream whose track another live replica owns go
down one PushFrames stream to that owner (opened on the first such frame, one per owner per caller stream),
with the caller's `authorization`, its remaining deadline and the forwarded mark (server/forward.py).

Why a stream per owner rather than one forwarded PushFrame per frame: the owner answers a stream's frames in
order, so the caller's results stay in request order with no per-frame call set-up, and the owner's flow
control (an EVERY_FRAME track that slows its pusher) reaches the caller through the proxy unchanged.

The owner answers in request order, so each owner stream keeps a FIFO of the futures of the frames it was
sent; the caller's stream (server/service.py) awaits those futures in its own order, interleaved with the
frames it serves itself. When an owner stream fails, every frame still waiting on it fails with the same
status (the caller's stream then ends with it, as it would have talking to the owner directly):
UNAVAILABLE when the owner went away (the caller reopens; the next lookup finds the new owner or serves it
here), the owner's own code otherwise. Frames sent after the owner went away are routed afresh (each frame
is looked up), so a stream with nothing in flight when its owner drains simply goes on. An owner that
answers no frame for `owner_timeout_s` (paused or hung) fails its waiting frames with UNAVAILABLE, as a
forwarded PushFrame does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any

import grpc
from lorat.v1 import tracker_pb2 as pb

from .errors import ServiceError
from .forward import Forwarder


def _error(exc: grpc.aio.AioRpcError, address: str) -> ServiceError:
    # CANCELLED: an owner shutting down cancels its open streams (ours are cancelled only when we are done)
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ServiceError(grpc.StatusCode.UNAVAILABLE,
                            f"the server holding these tracks ({address}) went away: {exc.details() or ''}; "
                            "reopen the stream")
    return ServiceError(exc.code(), exc.details() or "")


class OwnerStream:
    """One PushFrames call to one owner, shared by the frames of one caller stream for its tracks."""

    def __init__(self, forwarder: Forwarder, address: str, context: Any) -> None:
        self.forwarder = forwarder
        self.address = address
        self.pending: collections.deque[tuple[float, asyncio.Future, str]] = collections.deque()
        self.error: ServiceError | None = None
        self.call = forwarder.stub(address).PushFrames(metadata=forwarder.metadata(context),
                                                       timeout=context.time_remaining())
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(), name=f"push-proxy-read-{address}")
        self._watchdog = loop.create_task(self._watch(), name=f"push-proxy-watchdog-{address}")

    async def send(self, request: pb.PushFrameRequest) -> asyncio.Future:
        """Write one frame to the owner; -> the future of its result (resolved in the owner's order)."""
        if self.error is not None:
            raise self.error
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((time.monotonic(), fut, request.track_id))
        try:
            await self.call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            err = _error(exc, self.address) if isinstance(exc, grpc.aio.AioRpcError) else None
            self._fail(self.error or err or await self._final_error())
            return fut
        self.forwarder.count("PushFrames")
        return fut

    async def _final_error(self) -> ServiceError:
        try:
            code = await self.call.code()
            details = await self.call.details()
        except Exception:  # the call's status could not be read: treat the owner as gone
            code, details = grpc.StatusCode.UNAVAILABLE, ""
        if code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return ServiceError(grpc.StatusCode.UNAVAILABLE,
                                f"the server holding these tracks ({self.address}) closed the stream {details}; "
                                "reopen the stream")
        return ServiceError(code, details or "")

    async def _read(self) -> None:
        try:
            while True:
                result = await self.call.read()
                if result is grpc.aio.EOF:
                    break
                if self.pending:
                    _, fut, _ = self.pending.popleft()
                    if not fut.done():
                        fut.set_result(result)
            self._fail(await self._final_error())
        except grpc.aio.AioRpcError as exc:
            self._fail(_error(exc, self.address))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave the caller's frames waiting forever
            self._fail(ServiceError(grpc.StatusCode.INTERNAL, f"forwarding failed ({type(exc).__name__})"))

    async def _watch(self) -> None:
        """Fail the waiting frames when the owner answers none of them for `owner_timeout_s`."""
        limit = self.forwarder.owner_timeout_s
        while self.error is None:
            await asyncio.sleep(min(1.0, limit / 4))
            if self.pending and time.monotonic() - self.pending[0][0] > limit:
                self._fail(ServiceError(grpc.StatusCode.UNAVAILABLE,
                                        f"the server holding track {self.pending[0][2]!r} did not answer within "
                                        f"{limit:g}s; retry"))
                self.call.cancel()

    def _fail(self, err: ServiceError) -> None:
        if self.error is None:
            self.error = err
        if err.code == grpc.StatusCode.UNAVAILABLE:  # ask Redis for the owner again next time
            for _, _, track_id in self.pending:
                self.forwarder.drop(track_id)
        while self.pending:
            _, fut, _ = self.pending.popleft()
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved here: a caller that already left must not log it as lost

    async def close(self) -> None:
        self.call.cancel()
        for task in (self._reader, self._watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail(ServiceError(grpc.StatusCode.CANCELLED, "the caller's stream ended"))


class PushProxy:
    """The owner streams of one caller's PushFrames stream."""

    def __init__(self, forwarder: Forwarder, context: Any) -> None:
        self.forwarder = forwarder
        self.context = context
        self._streams: dict[str, OwnerStream] = {}

    async def route(self, request: pb.PushFrameRequest, local: bool) -> asyncio.Future | None:
        """The future of the owner's answer when another live replica holds the track; None: serve it here."""
        if local:
            return None
        address = await self.forwarder.owner_address(request.track_id, self.context)
        if address is None:
            return None
        stream = self._streams.get(address)
        if stream is None or stream.error is not None:
            if stream is not None:  # failed earlier (its frames were answered with the error): start afresh
                await stream.close()
            stream = self._streams[address] = OwnerStream(self.forwarder, address, self.context)
        return await stream.send(request)

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams.clear()
