"""The gRPC face of TrackManager: maps requests to manager calls and ServiceError to status codes.

Requests that do not parse are answered INVALID_ARGUMENT (never UNKNOWN): the handlers are registered
with lenient deserializers that hand a `Malformed` marker to the method. Unexpected exceptions are
logged and answered INTERNAL with a short message (never a traceback or a secret).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from . import idempotency, limits
from .core import TrackManager
from .errors import ServiceError, refuse
from .forward import Forwarder, forwarded
from .inflight import InFlightCalls
from .log import event
from .placement import start_elsewhere
from .stored_info import info_from_stored
from .stream_proxy import PushProxy
from .urlpolicy import redact
from .watch_remote import RemoteWatch

SERVICE = "lorat.v1.Tracker"


class Malformed:
    """A request body that did not parse as `kind`."""

    def __init__(self, kind: str, error: str) -> None:
        self.kind = kind
        self.error = error


def _lenient(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError and friends
            return Malformed(cls.__name__, type(exc).__name__)
    return parse


def _check(request: Any) -> None:
    if isinstance(request, Malformed):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"request body is not a valid lorat.v1.{request.kind} ({request.error})")


def _status(method: Callable) -> Callable:
    @functools.wraps(method)
    async def wrapper(self: TrackerService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with self.calls.track():
            try:
                _check(request)
                return await method(self, request, context)
            except ServiceError as exc:  # refuse, not abort: no reference cycle pins the request (server/errors.py)
                refuse(context, exc.code, exc.message[:2000])
            except asyncio.CancelledError:
                if not self.calls.was_cut():  # the caller gave up
                    raise
                refuse(context, grpc.StatusCode.UNAVAILABLE, "the server stopped before this call finished; retry "
                       "(with the same lorat-push-id a retried push gets the first attempt's result)")
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                event("rpc_error", 40, method=method.__name__, error=redact(repr(exc))[:500])
                refuse(context, grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server log")
            return None
    return wrapper


class TrackerService(pb_grpc.TrackerServicer):
    def __init__(self, max_watchers: int = 64) -> None:
        self.manager: TrackManager | None = None  # set once the model and Redis are ready
        self.forwarder: Forwarder | None = None  # set when replicas register (server/forward.py)
        self.max_watchers = max_watchers
        self.watchers = 0
        self.calls = InFlightCalls()  # unary calls being answered: the SIGTERM path finishes them (server/app.py)

    def _mgr(self) -> TrackManager:
        if self.manager is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "server is starting; retry shortly")
        if self.manager.draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "server is draining; retry on another replica")
        return self.manager

    async def _forward(self, method: str, track_id: str, request: Any, context: Any) -> Any:
        """The owner's answer when another live replica holds `track_id`; None: serve it here."""
        mgr = self._mgr()
        if self.forwarder is None or track_id in mgr.tracks:
            return None
        limits.check_id(track_id)
        address = await self.forwarder.owner_address(track_id, context)
        if address is None:
            return None
        return await self.forwarder.call(method, track_id, address, request, context)

    @_status
    async def StartTrack(self, request: pb.StartTrackRequest, context: Any) -> pb.StartTrackResponse:
        placed = await start_elsewhere(self._mgr(), self.forwarder, request, context)  # camera tracks
        if placed is not None:  # started on the replica placement picked (server/placement.py)
            return placed
        track_id, first = await self._mgr().start_track(request)
        return pb.StartTrackResponse(track_id=track_id, first_result=first)

    @_status
    async def PushFrame(self, request: pb.PushFrameRequest, context: Any) -> pb.TrackResult:
        reply = await self._forward("PushFrame", request.track_id, request, context)
        if reply is not None:
            return reply
        pid = idempotency.push_id(context)
        fut = await self._mgr().push(request.track_id, request.frame, pid)
        if pid:  # the caller retries with this id: the frame goes on, and the retry gets its result
            return await asyncio.shield(fut)
        return await fut  # a caller that gives up cancels this: the frame is dropped, not computed

    async def PushFrames(self, request_iterator: AsyncIterator[pb.PushFrameRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TrackResult]:
        """Results come back in request order. A bad frame gets a DROPPED result (decode_error) and the
        stream goes on; an unknown or stopped track ends the stream with its status code."""
        try:
            mgr = self._mgr()
        except ServiceError as exc:
            refuse(context, exc.code, exc.message)
            return
        out: asyncio.Queue = asyncio.Queue(maxsize=64)
        proxy = PushProxy(self.forwarder, context) if self.forwarder is not None else None  # server/stream_proxy.py

        async def read() -> None:
            try:
                async for req in request_iterator:
                    try:
                        _check(req)
                        fut = None
                        if proxy is not None:  # a track another live replica holds: down a stream to it
                            limits.check_id(req.track_id)
                            fut = await proxy.route(req, req.track_id in mgr.tracks)
                        if fut is None:
                            fut = await mgr.push(req.track_id, req.frame)
                    except ServiceError as exc:
                        if exc.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED) \
                                and not isinstance(req, Malformed):
                            fut = asyncio.get_running_loop().create_future()
                            fut.set_result(pb.TrackResult(
                                track_id=req.track_id[:128], source_pts=req.frame.pts, status=pb.DROPPED,
                                drop_reason="decode_error", message=exc.message[:2000], model_id=mgr.model_id))
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
                    refuse(context, item.code, item.message[:2000])
                    return
                if isinstance(item, BaseException):
                    event("rpc_error", 40, method="PushFrames", error=redact(repr(item))[:500])
                    refuse(context, grpc.StatusCode.INTERNAL, f"internal error ({type(item).__name__})")
                    return
                try:
                    yield await item
                except ServiceError as exc:  # the track moved while the frame waited
                    refuse(context, exc.code, exc.message[:2000])
                    return
        finally:
            reader.cancel()
            if proxy is not None:
                await proxy.close()

    async def WatchTracks(self, request: pb.WatchTracksRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TrackResult]:
        try:
            _check(request)
            mgr = self._mgr()
            if self.watchers >= self.max_watchers:
                mgr.metrics.requests_refused.labels("max_watchers").inc()
                raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"this server serves at most {self.max_watchers} WatchTracks streams at once "
                                   "(--max-watchers); close one or use Redis Streams")
            if len(request.track_ids) > 1024:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "at most 1024 track_ids per WatchTracks")
        except ServiceError as exc:
            refuse(context, exc.code, exc.message)
            return
        ids = set(request.track_ids)
        remote = None  # other replicas' tracks (server/watch_remote.py): their result streams or a fan-out
        if self.forwarder is not None and not forwarded(context):
            remote = RemoteWatch(self.forwarder, context, request, set(mgr.tracks))
            if await remote.prepare():
                ids = remote.hub_ids
            else:
                remote = None
        self.watchers += 1
        watcher, backlog = mgr.hub.subscribe(ids, request.from_frame)
        if remote is not None:
            remote.start(watcher.offer)
        event("watch_started", watchers=self.watchers, backlog=len(backlog))
        try:
            for result in backlog:
                if remote is None or remote.accept(result):
                    yield result
            while True:
                result = await watcher.queue.get()
                if remote is None or remote.accept(result):
                    yield result
        finally:
            self.watchers -= 1
            mgr.hub.unsubscribe(watcher)
            if remote is not None:
                await remote.close()

    @_status
    async def StopTrack(self, request: pb.StopTrackRequest, context: Any) -> pb.TrackInfo:
        reply = await self._forward("StopTrack", request.track_id, request, context)
        return reply if reply is not None else await self._mgr().stop_track(request.track_id)

    @_status
    async def GetTrack(self, request: pb.GetTrackRequest, context: Any) -> pb.TrackInfo:
        reply = await self._forward("GetTrack", request.track_id, request, context)
        if reply is not None:
            return reply
        mgr = self._mgr()
        try:
            return mgr.get_track(request.track_id)
        except ServiceError as exc:  # held by no server (lease lapsed): what Redis has (server/stored_info.py)
            if exc.code != grpc.StatusCode.NOT_FOUND or mgr.store is None:
                raise
            try:
                stored = await mgr.store.load(request.track_id)
                if stored is not None:
                    holder = await mgr.store.lease_holder(request.track_id)
                    return info_from_stored(request.track_id, stored, holder if holder != mgr.store.owner else "")
            except Exception as err:  # Redis away or unreadable state: the local answer stands
                event("stored_info_failed", 20, track_id=request.track_id, error=type(err).__name__)
            raise

    @_status
    async def ListTracks(self, request: pb.ListTracksRequest, context: Any) -> pb.ListTracksResponse:
        """This replica's tracks, and with replicas registered every other live replica's too."""
        tracks = self._mgr().list_tracks()
        if self.forwarder is not None:
            seen = {t.track_id for t in tracks}
            tracks += [t for t in await self.forwarder.list_all(context) if t.track_id not in seen]
        return pb.ListTracksResponse(tracks=tracks)


def add_to_server(servicer: TrackerService, server: grpc.aio.Server) -> None:
    """Like the generated `add_TrackerServicer_to_server`, with lenient request parsing."""
    kinds = {
        "StartTrack": (grpc.unary_unary_rpc_method_handler, pb.StartTrackRequest, pb.StartTrackResponse),
        "PushFrame": (grpc.unary_unary_rpc_method_handler, pb.PushFrameRequest, pb.TrackResult),
        "PushFrames": (grpc.stream_stream_rpc_method_handler, pb.PushFrameRequest, pb.TrackResult),
        "WatchTracks": (grpc.unary_stream_rpc_method_handler, pb.WatchTracksRequest, pb.TrackResult),
        "StopTrack": (grpc.unary_unary_rpc_method_handler, pb.StopTrackRequest, pb.TrackInfo),
        "GetTrack": (grpc.unary_unary_rpc_method_handler, pb.GetTrackRequest, pb.TrackInfo),
        "ListTracks": (grpc.unary_unary_rpc_method_handler, pb.ListTracksRequest, pb.ListTracksResponse),
    }
    handlers = {name: make(getattr(servicer, name), request_deserializer=_lenient(req),
                           response_serializer=resp.SerializeToString)
                for name, (make, req, resp) in kinds.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
