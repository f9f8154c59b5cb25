"""``lorat-client track FILE_OR_URL --box x,y,w,h``: follow an object through a video file or a camera.

A file is decoded here (needs PyAV: ``pip install './clients/python[video]'`` from a clone) and its frames pushed over
one bidirectional stream; an rtsp:// URL is handed to the server, which pulls it, and its results are
watched. Results go to a CSV file, optionally a video with the boxes drawn, and a progress line on stderr.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .client import Client
from .errors import LoratError
from .types import Box, TrackResult

CSV_HEADER = "frame,pts,x,y,w,h,confidence,status,drop_reason,latency_ms\n"


class Progress:
    """A plain-text progress line on stderr (no tqdm needed): done/total, rate, elapsed."""

    def __init__(self, total: int | None, stream: IO[str] | None = None, width: int = 30) -> None:
        self.total = total if total and total > 0 else None
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
            line = f"\r[{bar}] {self.done}/{self.total} {rate:5.1f} fps {elapsed:6.1f}s"
        else:
            line = f"\r{self.done} frames {rate:5.1f} fps {elapsed:6.1f}s"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        self.update(0, force=True)
        self.stream.write("\n")
        self.stream.flush()


def draw_box(rgb: np.ndarray, box: Box, color: tuple[int, int, int], thickness: int = 2) -> np.ndarray:
    """A copy of ``rgb`` with the box outline drawn (clipped to the image)."""
    out = rgb.copy()
    h, w = out.shape[:2]
    x0, y0 = round(box.x), round(box.y)
    x1, y1 = round(box.x + box.w) - 1, round(box.y + box.h) - 1
    c = np.array(color, dtype=np.uint8)
    for t in range(thickness):
        xa, xb = max(0, x0 + t), min(w - 1, x1 - t)
        ya, yb = max(0, y0 + t), min(h - 1, y1 - t)
        if xa > xb or ya > yb:
            break
        for yy in (ya, yb):
            if y0 + t <= yy <= y1 - t:
                out[yy, xa : xb + 1] = c
        for xx in (xa, xb):
            if x0 + t <= xx <= x1 - t:
                out[ya : yb + 1, xx] = c
    return out


def _need_av() -> Any:
    try:
        import av
    except ImportError:
        sys.exit("reading or rendering video needs PyAV: pip install av (or, from a clone of the repository, "
                 "pip install './clients/python[video]')")
    return av


def video_frames(path: str) -> tuple[Iterator[tuple[np.ndarray, int]], int | None, float]:
    """(frames as (rgb, pts), frame count if known, frame rate) of a video file."""
    av = _need_av()
    try:
        container = av.open(path)
        stream = container.streams.video[0]
    except (OSError, IndexError, av.FFmpegError) as exc:
        sys.exit(f"lorat-client: cannot read video {path}: {exc}")
    total = stream.frames or None
    rate = float(stream.average_rate or 25)

    def gen() -> Iterator[tuple[np.ndarray, int]]:
        try:
            for i, frame in enumerate(container.decode(stream)):
                yield frame.to_ndarray(format="rgb24"), int(frame.pts if frame.pts is not None else i)
        finally:
            container.close()

    return gen(), total, rate


class Renderer:
    """Writes frames with their boxes to an H.264 video file."""

    def __init__(self, path: str, width: int, height: int, fps: float) -> None:
        av = _need_av()
        from fractions import Fraction

        self._av = av
        self.container = av.open(path, mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        self.stream.width = width - width % 2
        self.stream.height = height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, rgb: np.ndarray, result: TrackResult) -> None:
        color = (0, 255, 0) if result.status == "TRACKING" else (255, 160, 0)
        img = draw_box(rgb, result.box, color)[: self.stream.height, : self.stream.width]
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def csv_line(r: TrackResult) -> str:
    lat = f"{r.latency * 1000:.1f}" if r.latency is not None else ""
    b = r.box
    return (f"{r.frame_number},{r.source_pts},{b.x:.2f},{b.y:.2f},{b.w:.2f},{b.h:.2f},{r.confidence:.4f},"
            f"{r.status},{r.drop_reason},{lat}\n")


def track_file(client: Client, args: argparse.Namespace, out: IO[str]) -> int:
    frames, total, fps = video_frames(args.source)
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    try:
        first, first_pts = next(frames)
    except StopIteration:
        sys.exit(f"{args.source}: no video frames")
    # every_frame: a file is pushed as fast as the server takes it; `latest` (for live cameras) would
    # supersede most of its frames.
    started = client.start_track(first, args.box, track_id=args.track_id, model=args.model,
                                 overload="every_frame", pts=first_pts)
    renderer = Renderer(args.render, first.shape[1], first.shape[0], fps) if args.render else None
    progress = Progress(total, None if args.progress else _Null())
    pending: collections.deque[np.ndarray] = collections.deque()
    first_result = started.first_result or TrackResult(started.track_id, 0, args.box, 1.0, "TRACKING")
    out.write(csv_line(first_result))
    if renderer:
        renderer.write(first, first_result)
    progress.update()
    count = 1

    def rest() -> Iterator[tuple[np.ndarray, int]]:
        for n, (rgb, pts) in enumerate(frames, start=2):
            if args.max_frames and n > args.max_frames:
                return
            if renderer:
                pending.append(rgb)
            yield rgb, pts

    try:
        for result in client.push_stream(started.track_id, rest()):
            out.write(csv_line(result))
            if renderer:
                renderer.write(pending.popleft(), result)
            progress.update()
            count += 1
    finally:
        progress.close()
        if renderer:
            renderer.close()
        client.stop(started.track_id)
    print(f"track {started.track_id}: {count} frames", file=sys.stderr)
    return 0


def track_url(client: Client, args: argparse.Namespace, out: IO[str]) -> int:
    if args.render:
        sys.exit("--render needs a video file; for a camera, record it first")
    opts = dict(kv.split("=", 1) for kv in args.rtsp_option)
    started = client.start_track(args.source, args.box, track_id=args.track_id, model=args.model,
                                 rtsp_options=opts)
    progress = Progress(args.max_frames or None, None if args.progress else _Null())
    count = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        for result in client.watch(started.track_id):
            out.write(csv_line(result))
            if result.status in ("TRACKING", "LOST", "DROPPED"):
                progress.update()
                count += 1
            if result.status in ("STOPPED", "FAILED"):
                print(f"\ntrack {result.status.lower()}: {result.message}", file=sys.stderr)
                break
            if (args.max_frames and count >= args.max_frames) or (deadline and time.monotonic() > deadline):
                break
    except KeyboardInterrupt:
        pass
    finally:
        progress.close()
        client.stop(started.track_id)
    return 0


class _Null:
    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorat-client", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("track", help="follow an object through a video file or an RTSP stream")
    t.add_argument("source", help="a video file, or an rtsp:// URL the server pulls")
    t.add_argument("--box", required=True, type=_box, help="initial box x,y,w,h in pixels of the first frame")
    t.add_argument("--server", default="127.0.0.1:50051", help="host:port of the server (default %(default)s)")
    t.add_argument("--output", "-o", help="results CSV (default: stdout)")
    t.add_argument("--render", help="write a video with the boxes drawn (files only)")
    t.add_argument("--model", default="", help="model name (default: the server's)")
    t.add_argument("--track-id", default=None)
    t.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    t.add_argument("--duration", type=float, default=0.0, help="URLs: stop after this many seconds")
    t.add_argument("--rtsp-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg option for the server's RTSP reader (repeatable)")
    t.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    t.add_argument("--ca", help="PEM file of root certificates")
    t.add_argument("--cert", help="PEM client certificate chain (mutual TLS)")
    t.add_argument("--key", help="PEM client private key (mutual TLS)")
    t.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="gRPC metadata sent with every call, e.g. authorization=Bearer... (repeatable)")
    t.add_argument("--token", default=os.environ.get("LORAT_TOKEN", ""),
                   help="bearer token for a server with --auth-token-file (default: $LORAT_TOKEN)")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")
    return p


def _box(text: str) -> Box:
    try:
        box = Box.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if box.w <= 0 or box.h <= 0:
        raise argparse.ArgumentTypeError("box width and height must be positive")
    return box


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metadata = [tuple(kv.split("=", 1)) for kv in args.metadata]
    client = Client(args.server, tls=args.tls, root_certificates=args.ca, certificate_chain=args.cert,
                    private_key=args.key, metadata=metadata, token=args.token or None)
    out: IO[str] = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        out.write(CSV_HEADER)
        is_url = "://" in args.source and not Path(args.source).exists()
        return track_url(client, args, out) if is_url else track_file(client, args, out)
    except (LoratError, ValueError, OSError) as err:
        print(f"lorat-client: {err}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
