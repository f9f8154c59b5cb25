"""Python SDK for the LoRAT tracking service (needs grpcio, protobuf and numpy; never torch).

    from lorat_client import Client
    with Client("127.0.0.1:50051") as client:
        track = client.start_track(first_rgb, (x, y, w, h))
        result = client.push(track.track_id, next_rgb)
        print(result.box, result.confidence)
"""

from ._common import RetryPolicy
from .aio import AsyncClient
from .client import Client
from .errors import LoratError
from .types import Box, StartedTrack, TrackInfo, TrackResult

__all__ = ["AsyncClient", "Box", "Client", "LoratError", "RetryPolicy", "StartedTrack", "TrackInfo", "TrackResult"]
__version__ = "0.1.0"
