"""Caps on what one caller can make the server hold, and checks of request values, each with an error a
person can act on (INVALID_ARGUMENT for values that are wrong, RESOURCE_EXHAUSTED for caps)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from lorat.v1 import tracker_pb2 as pb

from . import errors
from .settings import Settings
from .tracks import POLICY_NAMES, Options

TRACK_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_MODEL_NAME = 256
MAX_FRAME_AGE_S = 3600.0
# capture times must fall between 2000-01-01 and 2200-01-01 (seconds since the epoch)
CAPTURE_MIN_S, CAPTURE_MAX_S = 946_684_800, 7_258_118_400


def short(text: str, n: int = 64) -> str:
    """A caller's string, shortened for an error message (never echo megabytes back)."""
    return repr(text[:n] + ("..." if len(text) > n else ""))


def check_id(track_id: str) -> str:
    if not TRACK_ID_RE.fullmatch(track_id):  # fullmatch: "abc\n" is not "abc"
        raise errors.invalid(f"track_id {short(track_id)}: use 1-128 characters from [A-Za-z0-9_.-]")
    return track_id


def check_model_name(name: str) -> None:
    if len(name) > MAX_MODEL_NAME:
        raise errors.invalid(f"model name is {len(name)} characters; the limit is {MAX_MODEL_NAME}")


def check_labels(labels: Mapping[str, str], s: Settings) -> dict[str, str]:
    """Count first (cheap on the parsed map), copy last: a 20,000-entry or 1 MiB map is refused before any
    of it becomes Python objects."""
    if len(labels) > s.max_labels:
        raise errors.invalid(f"{len(labels)} labels; the limit is {s.max_labels} (--max-labels)")
    size = sum(len(k) + len(v) for k, v in labels.items())
    if size > s.max_label_bytes:
        raise errors.invalid(f"labels hold {size} characters; the limit is {s.max_label_bytes} (--max-label-bytes)")
    return dict(labels)


def options(opts: pb.TrackOptions, s: Settings) -> Options:
    if opts.overload_policy not in (0, *POLICY_NAMES):
        raise errors.invalid(f"unknown overload_policy {opts.overload_policy}")
    policy = POLICY_NAMES.get(opts.overload_policy, s.default_policy)
    age = opts.max_frame_age_seconds
    if not math.isfinite(age) or age < 0 or age > MAX_FRAME_AGE_S:
        raise errors.invalid(f"options.max_frame_age_seconds must be a finite number in [0, {MAX_FRAME_AGE_S:g}], "
                             f"got {age}")
    if opts.max_queue > s.max_queue_per_track:
        raise errors.invalid(f"options.max_queue {opts.max_queue} is over this server's limit of "
                             f"{s.max_queue_per_track} frames per track (--max-queue-per-track)")
    return Options(policy=policy, max_age_s=age or s.fifo_max_age_s,
                   max_queue=opts.max_queue or min(s.fifo_max_queue, s.max_queue_per_track))


def check_capture_time(frame: pb.Frame) -> None:
    if frame.HasField("capture_time"):
        t = frame.capture_time
        if not (CAPTURE_MIN_S <= t.seconds <= CAPTURE_MAX_S) or not 0 <= t.nanos < 1_000_000_000:
            raise errors.invalid("frame.capture_time is outside 2000..2200 (seconds since the epoch, UTC); "
                                 "leave it unset if the capture time is unknown")


def check_box(box: pb.Box) -> list[float]:
    values = [box.x, box.y, box.width, box.height]
    if not all(math.isfinite(v) for v in values):
        raise errors.invalid("initial_box has a non-finite value")
    return values
