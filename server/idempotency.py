"""A pushed frame applied once, even when its caller retries: the `lorat-push-id` call metadata.

Why: a caller whose push got no answer (a forwarded push to a silent owner answers UNAVAILABLE after
max(5 s, 2 x lease TTL); a connection lost mid-call) cannot tell whether the owner applied the frame. A
plain retry then applies the same picture twice (two frame numbers, the tracker stepped twice on it) or
leaves a gap. With an id per push, kept across retries (the Python SDK sends one), the retry is answered
from what the first attempt did:

- the frame is still queued or being computed on the same owner: the retry waits for that same result (a
  push with an id is not dropped when its caller gives up, so a retry finds it);
- it was applied: the owner remembers the futures of its last `REMEMBERED` pushes per track;
- the owner died or lost its lease after applying it: the id of the frame whose result is `last_result` is
  part of the track's per-frame state record in Redis (written in the same fenced write as the state), so
  the replica that resumes the track answers the retry with the stored result (frame number, box,
  confidence, pts) instead of stepping the tracker again. A frame the dead owner had not written to Redis
  was never answered either, and is applied anew with the same frame number.

Limits: only the most recent push of a track survives a move (older ids are in the owner's memory only);
PushFrames streams carry no per-frame id (a reopened stream's frames are new pushes).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc

from .errors import ServiceError

HEADER = "lorat-push-id"
REMEMBERED = 16
_VALID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def push_id(context: Any) -> str:
    """The caller's push id ('' when none); INVALID_ARGUMENT when it is malformed."""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            text = value if isinstance(value, str) else value.decode("latin-1")
            if not _VALID.fullmatch(text):
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"{HEADER} must be 1-64 characters of [A-Za-z0-9_.:-]")
            return text
    return ""


def _chained(source: asyncio.Future) -> asyncio.Future:
    """A new future with `source`'s outcome: the retry's caller giving up must not cancel the first."""
    out = asyncio.get_running_loop().create_future()

    def copy(done: asyncio.Future) -> None:
        if out.done():
            return
        if done.cancelled():
            out.cancel()
        elif done.exception() is not None:
            out.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            out.set_result(done.result())

    if source.done():
        copy(source)
    else:
        source.add_done_callback(copy)
    return out


def retried(track: Any, pid: str) -> asyncio.Future | None:
    """The answer to a push whose id this track has seen (None: a new push)."""
    if not pid:
        return None
    seen = track.pushes.get(pid)
    if seen is not None and not seen.cancelled() and not (seen.done() and seen.exception() is not None):
        return _chained(seen)
    if pid == track.last_push_id and track.last_result is not None:  # e.g. resumed from Redis
        done = asyncio.get_running_loop().create_future()
        done.set_result(track.last_result)
        return done
    return None


def remember(track: Any, pid: str, fut: asyncio.Future) -> None:
    if not pid:
        return
    track.pushes[pid] = fut
    while len(track.pushes) > REMEMBERED:
        track.pushes.popitem(last=False)
    fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future) -> None:
    """Mark an exception as seen: nobody may be waiting for a push whose caller gave up."""
    if not fut.cancelled():
        fut.exception()
