"""The SDK against a real LoRAT server over loopback gRPC (tiny random-weights model)."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerProcess
from lorat_client import AsyncClient, Box, Client, LoratError, RetryPolicy


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal PNG encoder (the SDK environment has no PIL)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_sync_client_lifecycle_and_errors(server_address: str, square) -> None:
    frames, boxes = square
    with Client(server_address, metadata={"x-request-source": "sdk-test"}) as client:
        started = client.start_track(frames[0], boxes[0], labels={"camera": "sq"})
        tid = started.track_id
        assert started.first_result is not None and started.first_result.frame_number == 0
        assert started.first_result.box == Box(*map(float, boxes[0]))
        r1 = client.push(tid, frames[1], pts=1)  # raw RGB
        r2 = client.push(tid, png_bytes(frames[2]), pts=2)  # encoded bytes
        r3 = client.push(tid, np.ascontiguousarray(frames[3][:, :, ::-1]), pts=3, pixel_format="bgr")
        assert [r.frame_number for r in (r1, r2, r3)] == [1, 2, 3]
        assert [r.source_pts for r in (r1, r2, r3)] == [1, 2, 3]
        for r in (r1, r2, r3):
            assert r.status == "TRACKING" and r.track_id == tid and r.model_id
            assert r.capture_time <= r.receive_time <= r.publish_time and 0 <= r.latency < 30
            assert r.box.x >= 0 and r.box.x + r.box.w <= 160.001 and r.box.w > 0
        info = client.get(tid)
        assert info.source_state == "PUSH" and info.frames_processed == 3 and info.labels == {"camera": "sq"}
        assert info.last_result is not None and info.last_result.frame_number == 3
        assert tid in {t.track_id for t in client.list()}

        with pytest.raises(LoratError) as e:
            client.push("no-such-track", frames[1])
        assert e.value.code.name == "NOT_FOUND"
        with pytest.raises(LoratError) as e:
            client.start_track(frames[0], (10, 10, -5, 4))
        assert e.value.code.name == "INVALID_ARGUMENT"
        with pytest.raises(LoratError) as e:
            client.push(tid, b"definitely not an image")
        assert e.value.code.name == "INVALID_ARGUMENT"
        with pytest.raises(LoratError) as e:
            client.start_track(frames[0], boxes[0], track_id=tid)
        assert e.value.code.name == "ALREADY_EXISTS"

        assert client.stop(tid).status == "STOPPED"
        with pytest.raises(LoratError) as e:
            client.push(tid, frames[4])
        assert e.value.code.name == "FAILED_PRECONDITION"


def test_push_stream_and_watch_replay(server_address: str, square) -> None:
    frames, boxes = square
    with Client(server_address) as client:
        tid = client.start_track(frames[0], boxes[0], overload="every_frame").track_id
        results = list(client.push_stream(tid, frames[1:]))
        assert [r.frame_number for r in results] == list(range(1, len(frames)))
        assert [r.source_pts for r in results] == list(range(len(frames) - 1))

        watched: list = []

        def watch() -> None:
            for r in client.watch(tid, from_frame=5):
                watched.append(r)
                if r.frame_number == len(frames):  # the live push below
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while len(watched) < len(frames) - 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.push(tid, frames[-1])
        t.join(10)
        assert not t.is_alive()
        # replayed results from frame 5 on, then the live one, in order and without repeats
        assert [r.frame_number for r in watched] == list(range(5, len(frames) + 1))
        client.stop(tid)


def test_async_client(server_address: str, square) -> None:
    frames, boxes = square

    async def main() -> None:
        async with AsyncClient(server_address) as client:
            await client.wait_ready(10)
            started = await client.start_track(png_bytes(frames[0]), boxes[0])
            tid = started.track_id
            r = await client.push(tid, frames[1], pts=11)
            assert r.frame_number == 1 and r.source_pts == 11 and r.status == "TRACKING"

            async def gen():  # an async frame source
                for f in frames[2:6]:
                    yield f
                    await asyncio.sleep(0)

            got = [x async for x in client.push_stream(tid, gen())]
            assert [x.frame_number for x in got] == [2, 3, 4, 5]
            # the default policy (latest) may supersede frames pushed faster than they are tracked
            assert {x.status for x in got} <= {"TRACKING", "DROPPED"}
            info = await client.get(tid)
            assert info.frames_processed + sum(info.frames_dropped.values()) == 5
            assert info.frames_dropped.get("superseded", 0) == sum(x.status == "DROPPED" for x in got)
            assert tid in {t.track_id for t in await client.list()}
            with pytest.raises(LoratError) as e:
                await client.get("missing")
            assert e.value.code.name == "NOT_FOUND"
            assert (await client.stop(tid)).status == "STOPPED"

    asyncio.run(main())


def test_retries_until_the_server_comes_up(server_process: ServerProcess, tmp_path: Path) -> None:
    late = ServerProcess(server_process.python, tmp_path)
    late.checkpoint = server_process.checkpoint
    with Client(late.address, timeout=5, retry=RetryPolicy(max_attempts=400, initial_backoff=0.05,
                                                            max_backoff=0.25)) as client:
        with pytest.raises(LoratError) as e:  # nobody there, retries disabled: UNAVAILABLE at once
            Client(late.address, retry=RetryPolicy(max_attempts=1)).list()
        assert e.value.code.name == "UNAVAILABLE"
        threading.Timer(0.5, late.start).start()
        t0 = time.monotonic()
        try:
            assert client.list() == []  # retried with backoff until the server was up
            assert time.monotonic() - t0 > 0.5
        finally:
            time.sleep(0.6)
            late.stop()


def test_cli_tracks_a_video_file(server_address: str, tmp_path: Path) -> None:
    av = pytest.importorskip("av", reason="the CLI reads video files with PyAV (lorat-client[video])")
    from conftest import moving_square

    frames, boxes = moving_square(15)
    video = tmp_path / "square.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    results, rendered = tmp_path / "results.csv", tmp_path / "boxes.mp4"
    x, y, w, h = boxes[0]
    proc = subprocess.run(
        [sys.executable, "-m", "lorat_client.cli", "track", str(video), "--box", f"{x},{y},{w},{h}",
         "--server", server_address, "--output", str(results), "--render", str(rendered)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "15/15" in proc.stderr  # the progress line reached the end
    lines = results.read_text().splitlines()
    assert lines[0].startswith("frame,pts,x,y,w,h,confidence,status")
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(15))
    assert all(r[7] == "TRACKING" for r in rows)
    assert rows[0][2:6] == [f"{v:.2f}" for v in boxes[0]]
    with av.open(str(rendered)) as c:
        out_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(out_frames) == 15 and out_frames[0].shape == (120, 160, 3)
    # the initial box is drawn in green on the first rendered frame
    top_edge = out_frames[0][y, x + 2 : x + w - 2].astype(int)
    assert (top_edge[:, 1] - top_edge[:, 0]).mean() > 80

    bad = subprocess.run([sys.executable, "-m", "lorat_client.cli", "track", str(tmp_path / "missing.mp4"),
                          "--box", "1,2,3,4", "--server", server_address], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_watch_yields_the_final_stopped_result_and_ends(server_address: str, square) -> None:
    """watch() of a track ends once the track stops, after yielding its STOPPED result (whose frame
    number repeats the last frame's); a watch of a track that had already stopped ends at once."""
    frames, boxes = square
    with Client(server_address) as client:
        tid = client.start_track(frames[0], boxes[0], overload="every_frame").track_id
        got: list = []
        watcher = threading.Thread(target=lambda: got.extend(client.watch(tid)), daemon=True)
        watcher.start()
        time.sleep(0.5)  # the watch is subscribed (if not, it replays from the current frame anyway)
        for f in frames[1:4]:
            client.push(tid, f)
        client.stop(tid)
        watcher.join(30)
        assert not watcher.is_alive(), "watch() did not end after its track stopped"
        assert got[-1].status == "STOPPED" and got[-1].frame_number == 3
        assert [r.frame_number for r in got if r.status == "TRACKING"][-1] == 3
        again = list(client.watch(tid))  # already stopped: its final result, then the end
        assert [(r.status, r.frame_number) for r in again] == [("STOPPED", 3)]

    async def run() -> list:
        async with AsyncClient(server_address) as aclient:
            return [r async for r in aclient.watch(tid)]

    assert [r.status for r in asyncio.run(run())] == ["STOPPED"]
