"""What the sync and asyncio clients share: connection options, retry policy and request building."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb

from .types import Box

OVERLOAD = {"latest": pb.LATEST, "fifo": pb.FIFO, "every_frame": pb.EVERY_FRAME}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on UNAVAILABLE (server starting, draining or unreachable).

    The wait before retry n is ``min(max_backoff, initial_backoff * multiplier**(n-1))`` scaled by a
    random factor in [0.5, 1]. ``max_attempts`` counts the first try; 1 disables retries.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    retry_codes: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE,)

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        return base * random.uniform(0.5, 1.0)

    def should_retry(self, err: grpc.RpcError, attempt: int) -> bool:
        code = err.code() if hasattr(err, "code") else None
        return code in self.retry_codes and attempt < self.max_attempts


def _read(v: bytes | str | Path | None) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    return Path(v).read_bytes()


def channel_credentials(
    root_certificates: bytes | str | Path | None,
    private_key: bytes | str | Path | None,
    certificate_chain: bytes | str | Path | None,
) -> grpc.ChannelCredentials:
    """TLS credentials; PEM bytes or paths to PEM files. Client cert needs both key and chain."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client certificate needs both private_key and certificate_chain")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates),
        private_key=_read(private_key),
        certificate_chain=_read(certificate_chain),
    )


def channel_options(server_name_override: str | None = None) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if server_name_override:
        opts.append(("grpc.ssl_target_name_override", server_name_override))
    return opts


def open_channel(
    channel_module: Any,
    target: str,
    *,
    tls: bool,
    root_certificates: bytes | str | Path | None,
    private_key: bytes | str | Path | None,
    certificate_chain: bytes | str | Path | None,
    server_name_override: str | None,
) -> Any:
    """A TLS channel when asked for (or when any certificate is given), else a plaintext one.

    `channel_module` is `grpc` for the synchronous client and `grpc.aio` for the asyncio one.
    """
    opts = channel_options(server_name_override)
    if tls or root_certificates or private_key or certificate_chain:
        creds = channel_credentials(root_certificates, private_key, certificate_chain)
        return channel_module.secure_channel(target, creds, options=opts)
    return channel_module.insecure_channel(target, options=opts)


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer-token header for servers started with --auth-token-file (none when token is empty)."""
    return (("authorization", f"Bearer {token.strip()}"),) if token and token.strip() else ()


def push_id_metadata() -> tuple[tuple[str, str], ...]:
    """A fresh `lorat-push-id` for one PushFrame: its retries carry the same id, so the server applies the
    frame once and answers a retry with the first attempt's result."""
    return (("lorat-push-id", uuid.uuid4().hex),)


def metadata_tuple(metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    if metadata is None:
        return ()
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((str(k).lower(), str(v)) for k, v in items)


def _timestamp(t: float | None, msg: Any) -> None:
    if t is not None:
        msg.FromNanoseconds(int(t * 1e9))


def make_frame(
    frame: np.ndarray | bytes | bytearray | memoryview,
    *,
    pts: int = 0,
    capture_time: float | None = None,
    pixel_format: str = "rgb",
    h264: bool = False,
) -> pb.Frame:
    """A wire Frame from an HxWx3 uint8 array (raw RGB, or BGR with pixel_format="bgr"), JPEG/PNG bytes,
    or (h264=True) one H.264 access unit."""
    msg = pb.Frame(pts=int(pts))
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a raw frame must be HxWx3 uint8; got shape {frame.shape} dtype {frame.dtype}")
        fmt = {"rgb": pb.RawImage.RGB24, "bgr": pb.RawImage.BGR24}.get(pixel_format.lower())
        if fmt is None:
            raise ValueError(f"pixel_format must be 'rgb' or 'bgr', not {pixel_format!r}")
        h, w = frame.shape[:2]
        data = np.ascontiguousarray(frame).tobytes()
        msg.raw.CopyFrom(pb.RawImage(format=fmt, width=w, height=h, stride=w * 3, data=data))
    elif isinstance(frame, (bytes, bytearray, memoryview)):
        if h264:
            msg.h264 = bytes(frame)
        else:
            msg.encoded = bytes(frame)
    else:
        raise TypeError(f"a frame is a numpy array or encoded bytes, not {type(frame).__name__}")
    _timestamp(capture_time, msg.capture_time)
    return msg


def make_options(overload: str, max_frame_age: float, max_queue: int) -> pb.TrackOptions:
    try:
        policy = OVERLOAD[overload.lower()]
    except KeyError:
        raise ValueError(f"overload must be one of {sorted(OVERLOAD)}, not {overload!r}") from None
    return pb.TrackOptions(overload_policy=policy, max_frame_age_seconds=max_frame_age, max_queue=max_queue)


def start_request(
    source: str | np.ndarray | bytes,
    box: Box | Sequence[float],
    *,
    track_id: str | None,
    model: str,
    overload: str,
    max_frame_age: float,
    max_queue: int,
    labels: Mapping[str, str] | None,
    rtsp_options: Mapping[str, str] | None,
    init_pts: int,
    pts: int,
    capture_time: float | None,
    pixel_format: str,
) -> pb.StartTrackRequest:
    """StartTrack from an rtsp:// (or other stream) URL, or from a first frame (array or encoded bytes)."""
    req = pb.StartTrackRequest(
        track_id=track_id or "",
        initial_box=Box.of(box).to_proto(),
        model=model,
        options=make_options(overload, max_frame_age, max_queue),
        labels=dict(labels or {}),
    )
    if isinstance(source, str):
        if "://" not in source:
            raise ValueError(f"a string source must be a stream URL (rtsp://...), not {source!r}")
        req.rtsp.CopyFrom(pb.RtspSource(url=source, options=dict(rtsp_options or {}), init_pts=init_pts))
    else:
        req.first_frame.CopyFrom(make_frame(source, pts=pts, capture_time=capture_time, pixel_format=pixel_format))
    return req


def now() -> float:
    return time.time()


FINAL = (pb.STOPPED, pb.FAILED)


class WatchState:
    """What `watch()` has yielded, across reconnects.

    Each result is yielded once: a result counts as a repeat when its track already gave a later frame,
    or the same frame with the same status (the final STOPPED result carries the number of the track's
    last frame, so the frame number alone is not enough). A watch of named tracks ends once each of them
    has sent its final result (STOPPED or FAILED); a watch of all tracks never ends by itself.
    """

    def __init__(self, track_ids: Sequence[str], from_frame: int) -> None:
        self.ids = list(track_ids)
        self.from_frame = from_frame
        self._last: dict[str, tuple[int, set[int]]] = {}
        self.ended: set[str] = set()

    @property
    def done(self) -> bool:
        return bool(self.ids) and set(self.ids) <= self.ended

    def request(self, current: Mapping[str, pb.TrackInfo]) -> pb.WatchTracksRequest:
        """The next (re)connect: replay from the earliest frame a watched track is at (its own last one,
        or the server's current one from GetTrack), so that a final result published meanwhile is not
        missed. The caller's from_frame holds for tracks that have given nothing yet."""
        starts = []
        for tid in self.ids:
            if tid in self._last:
                starts.append(self._last[tid][0])
            elif self.from_frame:
                starts.append(self.from_frame)
            elif tid in current and current[tid].HasField("last_result"):
                starts.append(int(current[tid].last_result.frame_number))
        start = min(starts) if starts and self.ids else self.from_frame
        return pb.WatchTracksRequest(track_ids=self.ids, from_frame=max(start, 0))

    def accept(self, m: pb.TrackResult) -> bool:
        frame, statuses = self._last.get(m.track_id, (-1, set()))
        if m.frame_number < frame or (m.frame_number == frame and m.status in statuses):
            return False
        if m.frame_number > frame:
            statuses = set()
        statuses.add(m.status)
        self._last[m.track_id] = (int(m.frame_number), statuses)
        if m.status in FINAL:
            self.ended.add(m.track_id)
        return True

    def final_from_info(self, info: pb.TrackInfo) -> pb.TrackResult | None:
        """A track that had ended before the watch began: its final result, from GetTrack."""
        if info.status not in FINAL or info.track_id in self.ended:
            return None
        last = info.last_result
        result = pb.TrackResult(track_id=info.track_id, frame_number=last.frame_number, box=last.box,
                                status=info.status, message=info.message, model_id=info.model_id)
        return result if self.accept(result) else None
