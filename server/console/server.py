"""The console's HTTP side: an aiohttp app on the server's event loop (routes in docs/console.md)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from lorat.v1 import tracker_pb2 as pb

from .. import errors
from ..log import event
from .auth import COOKIE, ConsoleAuth
from .media import FileFeeder, MediaDir, first_video_frame, raw_frame, rtsp_preview
from .tracks import RateMeter, result_json, track_json
from .views import LiveViews

STATIC = Path(__file__).parent / "static"
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.FAILED_PRECONDITION: 409,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
               grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAUTHENTICATED: 401}


@web.middleware
async def _service_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """ServiceError (the manager's caller mistakes) -> JSON {"error": message} with the matching status."""
    try:
        return await handler(request)
    except errors.ServiceError as exc:
        return web.json_response({"error": exc.message, "code": exc.code.name}, status=HTTP_STATUS.get(exc.code, 500))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":  # also keeps cross-site form posts out
        raise errors.invalid("send a JSON body (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError:
        raise errors.invalid("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.invalid("the body must be a JSON object")
    return body


def _box(body: dict[str, Any]) -> pb.Box:
    box = body.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise errors.invalid("box must be [x, y, width, height] in frame pixels")
    return pb.Box(x=float(box[0]), y=float(box[1]), width=float(box[2]), height=float(box[3]))


def _jpeg_json(views: LiveViews, rgb: np.ndarray) -> dict[str, Any]:
    data = base64.b64encode(views.encode(rgb)).decode()
    return {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "jpeg": f"data:image/jpeg;base64,{data}"}


class Console:
    def __init__(self, settings: Any, manager: Any, tokens: Any | None = None) -> None:
        self.settings = settings
        self.manager = manager
        self.views = LiveViews()
        self.media = MediaDir(getattr(settings, "console_media_dir", ""))
        self.rates = RateMeter()
        self.feeders: dict[str, FileFeeder] = {}
        self.first_frames: dict[str, tuple[np.ndarray, pb.TrackResult]] = {}  # console-started, while live
        self.auth = ConsoleAuth(tokens, secure_cookie=bool(getattr(settings, "tls_cert", "")))
        self.runner: web.AppRunner | None = None
        self.port = 0
        manager.frame_observers.append(self.views.observe)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth.middleware, _service_errors], client_max_size=1 << 20)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC, show_index=False)
        r.add_get("/api/info", self.info)
        r.add_post("/api/login", self.login)
        r.add_get("/api/tracks", self.list_tracks)
        r.add_post("/api/tracks", self.start_track)
        r.add_get("/api/tracks/{track_id}", self.get_track)
        r.add_post("/api/tracks/{track_id}/stop", self.stop_track)
        r.add_get("/api/tracks/{track_id}/history", self.history)
        r.add_get("/api/tracks/{track_id}/live", self.live)
        r.add_get("/api/media", self.list_media)
        r.add_post("/api/preview", self.preview)
        return app

    # -- pages ------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({
            "model_id": self.manager.model_id, "auth_required": self.auth.required,
            "logged_in": self.auth.allowed(request), "media": self.media.root is not None,
            "rtsp": getattr(self.manager, "pulled", None) is not None, "live_max_fps": self.views.max_fps,
            "lost_confidence": getattr(self.settings, "lost_confidence", None),
            "lost_frames": getattr(self.settings, "lost_frames", None)})

    async def login(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        sid = self.auth.login(str(body.get("token", "")))
        if sid is None:
            event("console_login_failed", 30, peer=request.remote)
            return web.json_response({"error": "not a valid token"}, status=401)
        resp = web.json_response({"ok": True})
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.auth.secure_cookie, path="/")
        return resp

    # -- tracks -----------------------------------------------------------------------------------------

    async def list_tracks(self, request: web.Request) -> web.Response:
        now, mono = time.time(), time.monotonic()
        infos = self.manager.list_tracks()
        self.rates.keep({i.track_id for i in infos})
        self._forget_ended({i.track_id for i in infos})
        rows = [track_json(i, self.rates.rate(i.track_id, i.frames_processed, mono), now) for i in infos]
        rows.sort(key=lambda t: t["track_id"])
        return web.json_response({"tracks": rows, "server_time": now})

    async def get_track(self, request: web.Request) -> web.Response:
        info = self.manager.get_track(request.match_info["track_id"])
        return web.json_response(track_json(info, 0.0))

    async def history(self, request: web.Request) -> web.Response:
        """Confidence over the frames the server still holds for WatchTracks replay (--replay-results)."""
        track_id = request.match_info["track_id"]
        watcher, backlog = self.manager.hub.subscribe({track_id}, 1)
        self.manager.hub.unsubscribe(watcher)
        points = [[r.frame_number, round(float(r.confidence), 5), pb.TrackStatus.Name(r.status)]
                  for r in backlog if r.status in (pb.TRACKING, getattr(pb, "LOST", -1))]
        return web.json_response({"track_id": track_id, "points": points})

    async def start_track(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        box = _box(body)
        track_id = str(body.get("track_id") or f"console-{uuid.uuid4().hex[:8]}")
        kind = body.get("source")
        labels = {"started_by": "console"}
        if kind == "file":
            name = str(body.get("file", ""))
            path = self.media.resolve(name)
            rgb = await asyncio.to_thread(first_video_frame, path)
            labels["console.file"] = name
            req = pb.StartTrackRequest(track_id=track_id, first_frame=raw_frame(rgb), initial_box=box,
                                       options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME), labels=labels)
            track_id, first = await self.manager.start_track(req)
            self.first_frames[track_id] = (rgb, first)
            feeder = FileFeeder(self.manager, track_id, path, pace=float(body.get("pace", 1.0)))
            self.feeders[track_id] = feeder
            feeder.start()
        elif kind == "rtsp":
            req = pb.StartTrackRequest(track_id=track_id, rtsp=pb.RtspSource(url=str(body.get("url", ""))),
                                       initial_box=box, labels=labels)
            track_id, first = await self.manager.start_track(req)
        else:
            raise errors.invalid('source must be "file" or "rtsp"')
        event("console_track_started", track_id=track_id, source=kind, peer=request.remote)
        return web.json_response({"track_id": track_id, "first_result": result_json(first)})

    async def stop_track(self, request: web.Request) -> web.Response:
        track_id = request.match_info["track_id"]
        feeder = self.feeders.pop(track_id, None)
        if feeder is not None:
            feeder.cancel()
        info = await self.manager.stop_track(track_id)
        self.first_frames.pop(track_id, None)
        return web.json_response(track_json(info, 0.0))

    def _forget_ended(self, live: set[str]) -> None:
        for track_id in [t for t in self.first_frames if t not in live]:
            self.first_frames.pop(track_id, None)
        for track_id in [t for t, f in self.feeders.items() if f.task is not None and f.task.done()]:
            self.feeders.pop(track_id, None)

    async def live(self, request: web.Request) -> web.StreamResponse:
        track_id = request.match_info["track_id"]
        self.manager.get_track(track_id)  # NOT_FOUND -> 404 before the upgrade
        return await self.views.serve(request, track_id, self.first_frames.get(track_id))

    # -- new tracks' sources ----------------------------------------------------------------------------

    async def list_media(self, request: web.Request) -> web.Response:
        files = await asyncio.to_thread(self.media.list)
        return web.json_response({"enabled": self.media.root is not None, "files": files})

    async def preview(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body.get("source") == "file":
            rgb = await asyncio.to_thread(first_video_frame, self.media.resolve(str(body.get("file", ""))))
        elif body.get("source") == "rtsp":
            timeout = float(getattr(self.settings, "rtsp_open_timeout_s", 10.0)) + 1.0
            rgb = await rtsp_preview(self.manager, str(body.get("url", "")), timeout)
        else:
            raise errors.invalid('source must be "file" or "rtsp"')
        return web.json_response(await asyncio.to_thread(_jpeg_json, self.views, rgb))

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=_ssl_context(self.settings), shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise OSError(f"cannot listen on {host}:{port} (--http-port): {exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def close(self) -> None:
        for feeder in self.feeders.values():
            feeder.cancel()
        if self.views.observe in self.manager.frame_observers:
            self.manager.frame_observers.remove(self.views.observe)
        await self.views.close()
        if self.runner is not None:
            await self.runner.cleanup()


def _ssl_context(settings: Any) -> ssl.SSLContext | None:
    """The gRPC API's TLS files serve the console too; with a client CA, browsers need a client cert."""
    cert, key = getattr(settings, "tls_cert", ""), getattr(settings, "tls_key", "")
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    client_ca = getattr(settings, "tls_client_ca", "")
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _token_file(settings: Any) -> Any | None:
    path = getattr(settings, "auth_token_file", "")
    if not path:
        return None
    from ..security import TokenFile  # the gRPC API's checker: one set of tokens for both

    return TokenFile(path)


async def start_console(settings: Any, manager: Any, tokens: Any | None = None) -> Console:
    """Serve the console on settings.grpc_host:settings.http_port; `tokens`: the gRPC API's TokenFile."""
    console = Console(settings, manager, tokens if tokens is not None else _token_file(settings))
    port = await console.start(settings.grpc_host, settings.http_port)
    scheme = "https" if getattr(settings, "tls_cert", "") else "http"
    event("console_listening", url=f"{scheme}://{settings.grpc_host}:{port}/",
          auth="token" if console.auth.required else "none")
    return console
