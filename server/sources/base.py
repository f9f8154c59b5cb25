"""The seam between a track and where its frames come from.

A push track is fed by PushFrame; a pulled track (RTSP) by a `FrameSource` the registry pumps into the
same per-track slot, so batching, policies, state and publishing do not care which it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from .frame import DecodedFrame

__all__ = ["DecodedFrame", "FrameSource"]


@runtime_checkable
class FrameSource(Protocol):
    """An async producer of decoded frames (see `server.sources.rtsp.RtspSource`)."""

    @property
    def state(self) -> object:
        """Current source state; its `.value` (or str()) is one of connecting/running/reconnecting/
        failed/stopped."""

    def frames(self) -> AsyncIterator[DecodedFrame]:
        """Decoded frames until the source stops or fails."""

    async def stop(self) -> None:
        """Stop producing; returns promptly; a second call does nothing."""
