"""The web console: a browser page served by `lorat-serve` on `--http-port` (docs/console.md).

It talks to the TrackManager only through its public methods (the ones the gRPC service uses) and one
frame observer (`TrackManager.frame_observers`) that costs a dict lookup per frame while no view is open.
"""

from .server import Console, start_console

__all__ = ["Console", "start_console"]
