"""A track in memory: engine state, its waiting frames (the per-track slot) and the overload policy.

Policies decide what happens when frames arrive faster than the track is served:
  latest       one waiting frame; a newer one replaces it (the old one is dropped: "superseded")
  fifo         up to `max_queue` waiting frames (oldest dropped: "queue_full"); frames that waited longer
               than `max_age_s` are dropped when their turn comes ("too_old")
  every_frame  never drops; the pusher waits for room (`wait_for_room`)
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import TrackState

POLICY_NAMES = {pb.LATEST: "latest", pb.FIFO: "fifo", pb.EVERY_FRAME: "every_frame"}
POLICY_ENUMS = {v: k for k, v in POLICY_NAMES.items()}


@dataclass(frozen=True)
class Options:
    policy: str = "latest"
    max_age_s: float = 1.0
    max_queue: int = 8

    def to_proto(self) -> pb.TrackOptions:
        return pb.TrackOptions(overload_policy=POLICY_ENUMS[self.policy], max_frame_age_seconds=self.max_age_s,
                               max_queue=self.max_queue)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_age_s": self.max_age_s, "max_queue": self.max_queue}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Options:
        return cls(policy=str(d["policy"]), max_age_s=float(d["max_age_s"]), max_queue=int(d["max_queue"]))


@dataclass
class PendingFrame:
    """A decoded frame waiting for its batch; `future` gets its TrackResult (None for pulled sources)."""

    rgb: np.ndarray
    frame_number: int
    pts: int
    capture_time: float | None  # epoch seconds, if the caller knows
    receive_time: float  # epoch seconds
    enqueued: float = field(default_factory=time.monotonic)
    future: asyncio.Future | None = None
    push_id: str = ""  # the caller's lorat-push-id (server/idempotency.py)


@dataclass
class Track:
    track_id: str
    state: TrackState
    model_id: str
    options: Options
    source: str = "push"
    labels: dict[str, str] = field(default_factory=dict)
    created_time: float = field(default_factory=time.time)
    status: int = pb.TRACKING
    message: str = ""
    frames_received: int = 0  # the last frame number handed out (0 = the initialisation frame)
    frames_processed: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    last_result: pb.TrackResult | None = None
    waiting: collections.deque = field(default_factory=collections.deque)
    in_flight: bool = False
    needs_full: bool = True  # Redis lacks the template/metadata: the next write is a full one
    h264: Any = None  # server.decode.H264Decoder, created on the first h264 frame
    source_obj: Any = None  # a FrameSource for pulled tracks
    pull: dict[str, Any] | None = None  # pulled tracks: {"url", "options"} to reopen the source elsewhere
    source_task: asyncio.Task | None = None
    room: asyncio.Event = field(default_factory=asyncio.Event)
    low_confidence_run: int = 0  # frames in a row below --lost-confidence (LOST from --lost-frames on)
    frame_size: tuple[int, int] | None = None  # (width, height) of the first frame: pushes must match
    epoch: int = 0  # the fencing token of our lease (0: no lease yet)
    ended: bool = False  # TrackRegistry.end ran: nothing more happens to this track here
    end_written: bool = False  # TrackRegistry.end's final Redis write has come back (the lease keeper waits for it)
    moved_to: str = ""  # the server that took the lease over
    template_fp: tuple = ()  # identity of the template part last written (state/adapter.py)
    last_activity: float = field(default_factory=time.monotonic)  # last frame received (idle timeout)
    last_push_id: str = ""  # lorat-push-id of the frame last_result answers (stored: server/idempotency.py)
    pushes: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # push id -> its future

    def mark_moved(self, holder: str) -> None:
        self.moved_to = holder
        self.message = (f"track {self.track_id!r} moved to server {holder!r}, which took its lease over; "
                        "send its frames there")

    def next_frame_number(self) -> int:
        self.frames_received += 1
        return self.frames_received

    def offer(self, frame: PendingFrame) -> list[tuple[PendingFrame, str]]:
        """Queue a frame under the policy; -> frames dropped by it, with their reasons."""
        dropped: list[tuple[PendingFrame, str]] = []
        if self.options.policy == "latest":
            while self.waiting:
                dropped.append((self.waiting.popleft(), "superseded"))
        elif self.options.policy == "fifo":
            while len(self.waiting) >= self.options.max_queue:
                dropped.append((self.waiting.popleft(), "queue_full"))
        self.waiting.append(frame)
        self._update_room()
        return dropped

    def take(self, now: float) -> tuple[PendingFrame | None, list[tuple[PendingFrame, str]]]:
        """The next frame to process, and fifo frames that outlived their age budget."""
        dropped: list[tuple[PendingFrame, str]] = []
        while self.waiting:
            frame = self.waiting.popleft()
            if self.options.policy == "fifo" and now - frame.enqueued > self.options.max_age_s:
                dropped.append((frame, "too_old"))
                continue
            self._update_room()
            return frame, dropped
        self._update_room()
        return None, dropped

    def has_room(self) -> bool:
        return self.options.policy != "every_frame" or len(self.waiting) < self.options.max_queue

    def _update_room(self) -> None:
        if self.has_room():
            self.room.set()
        else:
            self.room.clear()

    async def wait_for_room(self) -> None:
        while not self.has_room() and self.status == pb.TRACKING:
            self.room.clear()
            await self.room.wait()

    # -- persistence ------------------------------------------------------------------------------------

    def meta_dict(self) -> dict[str, Any]:
        return {"source": self.source, "options": self.options.to_dict(), "labels": self.labels,
                "model_id": self.model_id, "created_time": self.created_time, "pull": self.pull,
                "frame_size": list(self.frame_size) if self.frame_size else None}

    def counters(self) -> dict[str, Any]:
        """The server's part of the per-batch state record (the engine's part comes from its family)."""
        last = self.last_result
        return {
            "frames_received": self.frames_received,
            "frames_processed": self.frames_processed,
            "dropped": dict(self.dropped),
            "low_confidence_run": self.low_confidence_run,
            "last_frame_number": int(last.frame_number) if last is not None else 0,
            "last_confidence": float(last.confidence) if last is not None else 1.0,
            "last_pts": int(last.source_pts) if last is not None else 0,
            "last_push_id": self.last_push_id,
        }


def box_to_proto(xyxy: np.ndarray) -> pb.Box:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return pb.Box(x=x0, y=y0, width=x1 - x0, height=y1 - y0)
