"""The gRPC face of TrackManager: maps requests to manager calls and ServiceError to status codes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from .core import TrackManager
from .errors import ServiceError
from .log import event


def _status(method: Callable) -> Callable:
    @functools.wraps(method)
    async def wrapper(self: TrackerService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)
    return wrapper


class TrackerService(pb_grpc.TrackerServicer):
    def __init__(self) -> None:
        self.manager: TrackManager | None = None  # set once the model and Redis are ready

    def _mgr(self) -> TrackManager:
        if self.manager is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "server is starting; retry shortly")
        if self.manager.draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "server is draining; retry on another replica")
        return self.manager

    @_status
    async def StartTrack(self, request: pb.StartTrackRequest, context: Any) -> pb.StartTrackResponse:
        track_id, first = await self._mgr().start_track(request)
        return pb.StartTrackResponse(track_id=track_id, first_result=first)

    @_status
    async def PushFrame(self, request: pb.PushFrameRequest, context: Any) -> pb.TrackResult:
        fut = await self._mgr().push(request.track_id, request.frame)
        return await fut

    async def PushFrames(self, request_iterator: AsyncIterator[pb.PushFrameRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TrackResult]:
        """Results come back in request order. A bad frame gets a DROPPED result (decode_error) and the
        stream goes on; an unknown or stopped track ends the stream with its status code."""
        try:
            mgr = self._mgr()
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)
        out: asyncio.Queue = asyncio.Queue(maxsize=64)

        async def read() -> None:
            try:
                async for req in request_iterator:
                    try:
                        fut = await mgr.push(req.track_id, req.frame)
                    except ServiceError as exc:
                        if exc.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                            fut = asyncio.get_running_loop().create_future()
                            fut.set_result(pb.TrackResult(
                                track_id=req.track_id, source_pts=req.frame.pts, status=pb.DROPPED,
                                drop_reason="decode_error", message=exc.message, model_id=mgr.model_id))
                        else:
                            await out.put(exc)
                            return
                    await out.put(fut)
                await out.put(None)
            except Exception as exc:
                await out.put(exc)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                if isinstance(item, ServiceError):
                    await context.abort(item.code, item.message)
                if isinstance(item, BaseException):
                    raise item
                yield await item
        finally:
            reader.cancel()

    async def WatchTracks(self, request: pb.WatchTracksRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TrackResult]:
        try:
            mgr = self._mgr()
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)
        watcher, backlog = mgr.hub.subscribe(set(request.track_ids), request.from_frame)
        event("watch_started", track_ids=",".join(request.track_ids) or "*", backlog=len(backlog))
        try:
            for result in backlog:
                yield result
            while True:
                yield await watcher.queue.get()
        finally:
            mgr.hub.unsubscribe(watcher)

    @_status
    async def StopTrack(self, request: pb.StopTrackRequest, context: Any) -> pb.TrackInfo:
        return await self._mgr().stop_track(request.track_id)

    @_status
    async def GetTrack(self, request: pb.GetTrackRequest, context: Any) -> pb.TrackInfo:
        return self._mgr().get_track(request.track_id)

    @_status
    async def ListTracks(self, request: pb.ListTracksRequest, context: Any) -> pb.ListTracksResponse:
        return pb.ListTracksResponse(tracks=self._mgr().list_tracks())
