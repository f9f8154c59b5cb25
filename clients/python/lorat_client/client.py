"""The synchronous client: one object per server connection, thread-safe like its gRPC channel."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from . import _common as c
from .errors import LoratError
from .types import Box, StartedTrack, TrackInfo, TrackResult

T = TypeVar("T")
Frame = np.ndarray | bytes


class Client:
    """Talk to a LoRAT tracking server.

    ``target``: "host:port". ``tls=True`` (or any of the certificate arguments) makes a TLS channel;
    certificates are PEM bytes or file paths. ``metadata`` is sent with every call. ``token``: a bearer token
    for a server started with --auth-token-file (sent as ``authorization: Bearer <token>``).
    ``timeout``: seconds per unary call (None: no deadline). ``retry``: backoff on UNAVAILABLE.
    """

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
            grpc, target, tls=tls, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, server_name_override=server_name_override,
        )
        self._stub = pb_grpc.TrackerStub(self._channel)
        self.metadata = c.metadata_tuple(metadata) + c.token_metadata(token)
        self.timeout = timeout
        self.retry = retry or c.RetryPolicy()

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], request: Any, extra: tuple[tuple[str, str], ...] = ()) -> T:
        attempt = 1
        while True:
            try:
                return fn(request, timeout=self.timeout, metadata=self.metadata + extra)
            except grpc.RpcError as err:
                if not self.retry.should_retry(err, attempt):
                    raise LoratError.from_rpc(err) from None
                time.sleep(self.retry.delay(attempt))
                attempt += 1

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (raises LoratError(UNAVAILABLE) after ``timeout``)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise LoratError(grpc.StatusCode.UNAVAILABLE, f"server not reachable within {timeout}s") from None

    # -- calls ------------------------------------------------------------------------------------

    def start_track(
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
        """Start a track on an RTSP URL (the server pulls it) or from a first frame (then ``push``).

        ``source``: "rtsp://..." | HxWx3 uint8 array (RGB; "bgr" via pixel_format) | JPEG/PNG bytes.
        ``overload``: what the server does when frames arrive faster than it tracks them. ``latest`` (the
        default) keeps only the newest waiting frame: right for a live camera, where a late box is worth
        less than a current one. Frames of a file are not live: pass ``every_frame`` (the pusher waits
        instead of frames being dropped), or ``latest`` will skip most of a file pushed at full speed.
        """
        req = c.start_request(
            source, box, track_id=track_id, model=model, overload=overload, max_frame_age=max_frame_age,
            max_queue=max_queue, labels=labels, rtsp_options=rtsp_options, init_pts=init_pts, pts=pts,
            capture_time=capture_time, pixel_format=pixel_format,
        )
        resp = self._call(self._stub.StartTrack, req)
        first = TrackResult.from_proto(resp.first_result) if resp.HasField("first_result") else None
        return StartedTrack(resp.track_id, first)

    def push(
        self,
        track_id: str,
        frame: Frame,
        *,
        pts: int = 0,
        capture_time: float | None = None,
        pixel_format: str = "rgb",
        h264: bool = False,
    ) -> TrackResult:
        """Push one frame (array, JPEG/PNG bytes, or an H.264 access unit) and wait for its result."""
        if capture_time is None:
            capture_time = c.now()
        msg = c.make_frame(frame, pts=pts, capture_time=capture_time, pixel_format=pixel_format, h264=h264)
        req = pb.PushFrameRequest(track_id=track_id, frame=msg)
        # one id for this frame, the same on every retry: a retried push is applied once (docs/scale-out.md)
        return TrackResult.from_proto(self._call(self._stub.PushFrame, req, c.push_id_metadata()))

    def push_stream(
        self, track_id: str, frames: Iterable[Frame], *, pixel_format: str = "rgb", h264: bool = False,
    ) -> Iterator[TrackResult]:
        """High-rate pushing over one bidirectional stream: frames in, results (and drops) out in order.
        Frame i gets pts=i unless frames yields (frame, pts) pairs. Frames are pushed as fast as the
        stream takes them: for a file, start the track with ``overload="every_frame"`` so none is
        superseded (see ``start_track``)."""

        def requests() -> Iterator[pb.PushFrameRequest]:
            for i, item in enumerate(frames):
                frame, pts = item if isinstance(item, tuple) else (item, i)
                msg = c.make_frame(frame, pts=pts, capture_time=c.now(), pixel_format=pixel_format, h264=h264)
                yield pb.PushFrameRequest(track_id=track_id, frame=msg)

        try:
            for m in self._stub.PushFrames(requests(), metadata=self.metadata):
                yield TrackResult.from_proto(m)
        except grpc.RpcError as err:
            raise LoratError.from_rpc(err) from None

    def watch(
        self, track_ids: Sequence[str] | str | None = None, *, from_frame: int = 0, reconnect: bool = True,
    ) -> Iterator[TrackResult]:
        """Results as they are published (all tracks when ``track_ids`` is empty), replaying held results
        with frame_number >= from_frame first. A watch of named tracks yields their final STOPPED or
        FAILED result and ends when all of them have ended (at once for tracks that had already ended).
        On UNAVAILABLE it reconnects with backoff, skipping results it already yielded."""
        ids = [track_ids] if isinstance(track_ids, str) else list(track_ids or [])
        state = c.WatchState(ids, from_frame)
        attempt = 1
        while not state.done:
            try:
                current = {}
                for tid in ids:
                    if tid not in state.ended:
                        try:
                            current[tid] = self._call(self._stub.GetTrack, pb.GetTrackRequest(track_id=tid))
                        except LoratError:
                            continue  # held by another server, or unknown here: the watch still follows it
                        final = state.final_from_info(current[tid])
                        if final is not None:
                            yield TrackResult.from_proto(final)
                if state.done:
                    return
                call = self._stub.WatchTracks(state.request(current), metadata=self.metadata)
                for m in call:
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
                time.sleep(self.retry.delay(attempt))
                attempt += 1

    def stop(self, track_id: str) -> TrackInfo:
        return TrackInfo.from_proto(self._call(self._stub.StopTrack, pb.StopTrackRequest(track_id=track_id)))

    def get(self, track_id: str) -> TrackInfo:
        return TrackInfo.from_proto(self._call(self._stub.GetTrack, pb.GetTrackRequest(track_id=track_id)))

    def list(self) -> list[TrackInfo]:
        resp = self._call(self._stub.ListTracks, pb.ListTracksRequest())
        return [TrackInfo.from_proto(t) for t in resp.tracks]
