"""Live views: the latest frame of a track with its result, as JPEG over a WebSocket, only while a view
is open.

The frame observer (called by the TrackManager after each tracked frame) only stores a reference to the
decoded frame and sets an event; JPEG encoding runs in one shared thread at each view's own pace, capped
at `max_fps`, and a view that is slow to read simply skips frames (it always gets the newest). Tracking
never waits for a viewer.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from aiohttp import web
from lorat.v1 import tracker_pb2 as pb
from PIL import Image

from .tracks import result_json


class View:
    def __init__(self) -> None:
        self.latest: tuple[np.ndarray, pb.TrackResult] | None = None
        self.ready = asyncio.Event()
        self.sent = 0


class LiveViews:
    def __init__(self, max_fps: float = 15.0, max_width: int = 960, quality: int = 75) -> None:
        self.max_fps = max_fps
        self.max_width = max_width
        self.quality = quality
        self._views: dict[str, set[View]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="console-jpeg")

    def observe(self, track_id: str, rgb: Any, result: pb.TrackResult) -> None:
        """TrackManager frame observer (server.commit.FrameObserver): O(1) when the track has no open view;
        `rgb` is the decoded frame (a NumPy array, or a device tensor when frames are decoded on a GPU)."""
        views = self._views.get(track_id)
        if views and rgb is not None:
            for view in views:
                view.latest = (rgb, result)
                view.ready.set()

    def open_views(self) -> int:
        return sum(len(v) for v in self._views.values())

    def encode(self, rgb: Any) -> bytes:
        if not isinstance(rgb, np.ndarray):  # a torch tensor (GPU-decoded frame): copy to the host here
            rgb = rgb.cpu().numpy()
        img = Image.fromarray(rgb)
        if img.width > self.max_width:
            img = img.resize((self.max_width, round(img.height * self.max_width / img.width)), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()

    async def serve(self, request: web.Request, track_id: str, first: tuple[np.ndarray, pb.TrackResult] | None
                    ) -> web.WebSocketResponse:
        """One WebSocket view: a JSON text message (the result) then a binary JPEG, per shown frame."""
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        view = View()
        if first is not None:
            view.latest = first
            view.ready.set()
        self._views.setdefault(track_id, set()).add(view)
        self._sockets.add(ws)
        reader = asyncio.create_task(self._drain_incoming(ws))
        loop = asyncio.get_running_loop()
        try:
            while not ws.closed and not reader.done():
                waiter = asyncio.ensure_future(view.ready.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reader.done() or view.latest is None:
                    break
                view.ready.clear()
                t0 = time.monotonic()
                rgb, result = view.latest
                jpeg = await loop.run_in_executor(self._encoder, self.encode, rgb)
                meta = result_json(result)
                meta.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]))
                await ws.send_str(json.dumps(meta))
                await ws.send_bytes(jpeg)
                view.sent += 1
                await asyncio.sleep(max(0.0, 1.0 / self.max_fps - (time.monotonic() - t0)))
        except (ConnectionResetError, RuntimeError):
            pass  # the browser went away mid-send
        finally:
            reader.cancel()
            self._sockets.discard(ws)
            views = self._views.get(track_id)
            if views is not None:
                views.discard(view)
                if not views:
                    del self._views[track_id]
            await ws.close()
        return ws

    @staticmethod
    async def _drain_incoming(ws: web.WebSocketResponse) -> None:
        async for _ in ws:  # the page sends nothing; this notices the close
            pass

    async def close(self) -> None:
        """Close every open view (the browser shows "closed"), so that shutdown need not wait for them."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        self._encoder.shutdown(wait=False, cancel_futures=True)
