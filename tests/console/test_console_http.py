"""The console's HTTP side without a browser or a model: token sessions and the media folder's bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server import errors
from server.console.media import MediaDir
from server.console.server import Console


class Tokens:
    def __init__(self, *tokens: bytes) -> None:
        self.tokens = set(tokens)

    def valid(self, presented: bytes) -> bool:
        return presented in self.tokens


class FakeManager:
    model_id = "tiny@test"
    pulled = None

    def __init__(self) -> None:
        self.frame_observers: list = []

    def list_tracks(self) -> list:
        return []


def test_token_sessions_bearer_and_revocation(tmp_path: Path) -> None:
    tokens = Tokens(b"s3cret")
    settings = SimpleNamespace(console_media_dir=str(tmp_path), grpc_host="127.0.0.1", http_port=0)

    async def run() -> None:
        console = Console(settings, FakeManager(), tokens)
        async with TestClient(TestServer(console.app())) as client:
            assert (await client.get("/")).status == 200  # the page itself is open
            assert (await client.get("/api/info")).status == 200
            assert (await client.get("/api/tracks")).status == 401
            assert (await client.post("/api/login", json={"token": "wrong"})).status == 401
            login = await client.post("/api/login", json={"token": "s3cret"})
            assert login.status == 200 and "HttpOnly" in login.headers["Set-Cookie"]
            assert (await client.get("/api/tracks")).status == 200  # the session cookie
            assert (await client.post("/api/login", data="token=s3cret")).status == 400  # JSON only
            tokens.tokens = {b"rotated"}  # the token left the file: its sessions end
            assert (await client.get("/api/tracks")).status == 401
        async with TestClient(TestServer(console.app())) as fresh:
            resp = await fresh.get("/api/tracks", headers={"Authorization": "Bearer rotated"})
            assert resp.status == 200

    asyncio.run(run())


def test_media_dir_never_leaves_its_folder(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (tmp_path / "media" / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    media = MediaDir(str(tmp_path / "media"))
    assert media.list() == ["a.mp4"]
    assert media.resolve("a.mp4") == (tmp_path / "media" / "a.mp4").resolve()
    for name in ("../secret.mp4", "link.mp4", str(tmp_path / "secret.mp4"), "a.txt"):
        with pytest.raises(errors.ServiceError):
            media.resolve(name)
    with pytest.raises(errors.ServiceError):
        MediaDir("").resolve("a.mp4")


def test_a_real_server_with_a_token_file_guards_the_console(tmp_path: Path) -> None:
    """`--auth-token-file` (the gRPC API's tokens) protects the console's API; the page stays loadable."""
    import json
    import urllib.error
    import urllib.request

    from .conftest import ConsoleServer

    (tmp_path / "tokens").write_text("# console test\nconsole-token-1\n")
    server = ConsoleServer(tmp_path, tmp_path / "server.log", ("--auth-token-file", str(tmp_path / "tokens")))
    try:
        server.wait_ready()

        def get(path: str, headers: dict | None = None) -> int:
            req = urllib.request.Request(server.url + path, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as err:
                return err.code

        assert get("/") == 200
        info = json.loads(urllib.request.urlopen(server.url + "/api/info", timeout=10).read())
        assert info["auth_required"] is True and info["logged_in"] is False
        assert get("/api/tracks") == 401
        assert get("/api/tracks", {"Authorization": "Bearer wrong"}) == 401
        assert get("/api/tracks", {"Authorization": "Bearer console-token-1"}) == 200
        login = urllib.request.Request(server.url + "/api/login", data=b'{"token": "console-token-1"}',
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=10) as resp:
            cookie = resp.headers["Set-Cookie"].split(";")[0]
        assert get("/api/tracks", {"Cookie": cookie}) == 200
        assert "console-token-1" not in server.log.read_text()  # never logged
    finally:
        server.stop()
