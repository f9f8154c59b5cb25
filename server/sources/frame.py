"""The unit a camera source hands to the tracker: decoded pixels plus the two timestamps results carry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded video frame.

    ``pts`` is the source's presentation timestamp in its own stream time base (``-1`` when the source
    gave none), echoed to callers as ``TrackResult.source_pts``. ``capture_time`` is a wall-clock estimate
    (seconds since the epoch) of when the camera captured the frame: the PTS on a clock anchored to the
    least-delayed frame of the connection, never later than ``receive_time`` (see ``_CaptureClock`` in
    rtsp.py). Following PTS (rather than stamping arrival) keeps a backlog in the network or decoder
    visible as frame age instead of hiding it. ``receive_time`` is when the frame left the decoder.
    """

    rgb: np.ndarray
    pts: int
    capture_time: float
    receive_time: float = field(default=0.0)
    time_base: float = field(default=0.0)  # seconds per pts tick; 0 when unknown

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])
