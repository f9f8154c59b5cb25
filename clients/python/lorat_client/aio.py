"""The asyncio client: the same calls as `Client`, awaitable, on grpc.aio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from . import _common as c
from .errors import LoratError
from .types import Box, StartedTrack, TrackInfo, TrackResult

T = TypeVar("T")
Frame = np.ndarray | bytes


class AsyncClient:
    """``async with AsyncClient("host:port") as client: ...`` — see `lorat_client.Client` for arguments."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        private_key: bytes | str | Path | None = None,
        certificate_chain: bytes | str | Path | None = None,
        server_name_override: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        retry: c.RetryPolicy | None = None,
    ) -> None:
        self._channel = c.open_channel(
            grpc.aio, target, tls=tls, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, server_name_override=server_name_override,
        )
        self._stub = pb_grpc.TrackerStub(self._channel)
        self.metadata = c.metadata_tuple(metadata) + c.token_metadata(token)
        self.timeout = timeout
        self.retry = retry or c.RetryPolicy()

    async def _call(self, fn: Callable[..., Awaitable[T]], request: Any,
                    extra: tuple[tuple[str, str], ...] = ()) -> T:
        attempt = 1
        while True:
            try:
                return await fn(request, timeout=self.timeout, metadata=self.metadata + extra)
            except grpc.RpcError as err:
                if not self.retry.should_retry(err, attempt):
                    raise LoratError.from_rpc(err) from None
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise LoratError(grpc.StatusCode.UNAVAILABLE, f"server not reachable within {timeout}s") from None

    async def start_track(
        self,
        source: str | Frame,
        box: Box | Sequence[float],
        *,
        track_id: str | None = None,
        model: str = "",
        overload: str = "latest",
        max_frame_age: float = 0.0,
        max_queue: int = 0,
        labels: Mapping[str, str] | None = None,
        rtsp_options: Mapping[str, str] | None = None,
        init_pts: int = 0,
        pts: int = 0,
        capture_time: float | None = None,
        pixel_format: str = "rgb",
    ) -> StartedTrack:
        req = c.start_request(
            source, box, track_id=track_id, model=model, overload=overload, max_frame_age=max_frame_age,
            max_queue=max_queue, labels=labels, rtsp_options=rtsp_options, init_pts=init_pts, pts=pts,
            capture_time=capture_time, pixel_format=pixel_format,
        )
        resp = await self._call(self._stub.StartTrack, req)
        first = TrackResult.from_proto(resp.first_result) if resp.HasField("first_result") else None
        return StartedTrack(resp.track_id, first)

    async def push(
        self,
        track_id: str,
        frame: Frame,
        *,
        pts: int = 0,
        capture_time: float | None = None,
        pixel_format: str = "rgb",
        h264: bool = False,
    ) -> TrackResult:
        if capture_time is None:
            capture_time = c.now()
        msg = c.make_frame(frame, pts=pts, capture_time=capture_time, pixel_format=pixel_format, h264=h264)
        req = pb.PushFrameRequest(track_id=track_id, frame=msg)
        # one id for this frame, the same on every retry: a retried push is applied once (docs/scale-out.md)
        return TrackResult.from_proto(await self._call(self._stub.PushFrame, req, c.push_id_metadata()))

    async def push_stream(
        self,
        track_id: str,
        frames: Iterable[Frame] | AsyncIterable[Frame],
        *,
        pixel_format: str = "rgb",
        h264: bool = False,
    ) -> AsyncIterator[TrackResult]:
        """Frames in over one bidirectional stream, results out in order."""

        def req(i: int, item: Any) -> pb.PushFrameRequest:
            frame, pts = item if isinstance(item, tuple) else (item, i)
            msg = c.make_frame(frame, pts=pts, capture_time=c.now(), pixel_format=pixel_format, h264=h264)
            return pb.PushFrameRequest(track_id=track_id, frame=msg)

        async def requests() -> AsyncIterator[pb.PushFrameRequest]:
            if isinstance(frames, AsyncIterable):
                i = 0
                async for item in frames:
                    yield req(i, item)
                    i += 1
            else:
                for i, item in enumerate(frames):
                    yield req(i, item)

        try:
            async for m in self._stub.PushFrames(requests(), metadata=self.metadata):
                yield TrackResult.from_proto(m)
        except grpc.RpcError as err:
            raise LoratError.from_rpc(err) from None

    async def watch(
        self, track_ids: Sequence[str] | str | None = None, *, from_frame: int = 0, reconnect: bool = True,
    ) -> AsyncIterator[TrackResult]:
        """Like `Client.watch`: replay from ``from_frame``, follow live, yield the final STOPPED/FAILED
        results and end when the named tracks have ended, reconnect on UNAVAILABLE."""
        ids = [track_ids] if isinstance(track_ids, str) else list(track_ids or [])
        state = c.WatchState(ids, from_frame)
        attempt = 1
        while not state.done:
            try:
                current = {}
                for tid in ids:
                    if tid not in state.ended:
                        try:
                            current[tid] = await self._call(self._stub.GetTrack, pb.GetTrackRequest(track_id=tid))
                        except LoratError:
                            continue  # held by another server, or unknown here: the watch still follows it
                        final = state.final_from_info(current[tid])
                        if final is not None:
                            yield TrackResult.from_proto(final)
                if state.done:
                    return
                call = self._stub.WatchTracks(state.request(current), metadata=self.metadata)
                async for m in call:
                    attempt = 1
                    if state.accept(m):
                        yield TrackResult.from_proto(m)
                    if state.done:
                        call.cancel()
                        return
                return
            except grpc.RpcError as err:
                if not (reconnect and self.retry.should_retry(err, attempt)):
                    raise LoratError.from_rpc(err) from None
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1

    async def stop(self, track_id: str) -> TrackInfo:
        m = await self._call(self._stub.StopTrack, pb.StopTrackRequest(track_id=track_id))
        return TrackInfo.from_proto(m)

    async def get(self, track_id: str) -> TrackInfo:
        m = await self._call(self._stub.GetTrack, pb.GetTrackRequest(track_id=track_id))
        return TrackInfo.from_proto(m)

    async def list(self) -> list[TrackInfo]:
        resp = await self._call(self._stub.ListTracks, pb.ListTracksRequest())
        return [TrackInfo.from_proto(t) for t in resp.tracks]
