"""`lorat-serve` as a user meets it: --help, embedded Redis (and its cleanup), a clear start failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from lorat.v1 import tracker_pb2 as pb

from server.settings import Settings

from .conftest import ROOT, ServerProc, box_pb, frame_pb, make_frames


def test_help_lists_every_setting_with_its_env_var() -> None:
    out = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out.stdout and Settings.env_name(name) in out.stdout


def test_embedded_redis_serves_and_dies_with_the_server(checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = ServerProc("", checkpoint, tmp_path / "embedded.log").start()
    try:
        frames, boxes = make_frames(2, 2)
        s.stub.StartTrack(pb.StartTrackRequest(track_id="e", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        assert s.stub.PushFrame(pb.PushFrameRequest(track_id="e", frame=frame_pb(frames[1]))).status == pb.TRACKING
        log = (tmp_path / "embedded.log").read_text()
        pid = int(re.search(r"event=embedded_redis_started .* pid=(\d+)", log).group(1))
        assert "event=embedded_redis url=redis://127.0.0.1:" in log
        os.kill(pid, 0)  # alive
    finally:
        s.kill()  # SIGKILL: no cleanup code runs in the server
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"embedded redis-server {pid} outlived its server")


def test_bad_checkpoint_fails_with_a_clear_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "nope.safetensors"
    out = subprocess.run([sys.executable, "-m", "server", "--checkpoint", str(bogus), "--grpc-port", "0",
                          "--metrics-port", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "cannot start" in out.stderr and str(bogus) in out.stderr


def test_docs_list_every_setting_with_its_default() -> None:
    text = (ROOT / "README.md").read_text()
    for name, field in Settings.__dataclass_fields__.items():
        row = f"| `--{name.replace('_', '-')}` | `{Settings.env_name(name)}` | `{field.default!r}` |"
        assert row in text, f"README.md lacks or has a stale row for {name}"
