"""Forwarding between replicas that serve over mutual TLS with bearer tokens: two real `lorat-serve`
replicas with certificates made by the test (openssl: a CA, one server certificate for both replicas, one
client certificate), on one real redis-server. A call reaching the replica that does not hold the track is
forwarded over TLS (trusting the CA, presenting the server's own certificate as the client certificate)
with the caller's token: PushFrame, GetTrack, a PushFrames stream, WatchTracks and StopTrack all work from
the wrong replica. A replica that trusts another CA cannot reach the owner: the caller gets UNAVAILABLE.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb

from ..service.conftest import (
    RedisProc,
    ServerProc,
    box_pb,
    frame_pb,
    make_frames,
    metric_value,
    reference_boxes,
    xywh,
)
from .procs import start_together

TOKEN = "fwd-tls-token-1"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed for certificates")


def _pki(d: Path) -> Path:
    """ca.pem (and other-ca.pem), server.pem for 127.0.0.1 (no extendedKeyUsage: usable as a client
    certificate too), client.pem with clientAuth."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN=test-{ca}")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


def _push(server: ServerProc, track_id: str, frame: np.ndarray) -> pb.TrackResult:
    return server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame_pb(frame)), metadata=AUTH,
                                 timeout=30)


def test_forwarding_over_mutual_tls_with_tokens(checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki = _pki(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(),
                                         private_key=(pki / "client.key").read_bytes(),
                                         certificate_chain=(pki / "client.pem").read_bytes())
    tls = dict(tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem",
               auth_token_file=tokens, lease_ttl_s=2.0, max_batch_wait_ms=5, http_port=-1)
    frames, boxes = make_frames(31, 8)
    expected = reference_boxes(engine, frames, boxes[0])
    redis = RedisProc().start()
    servers = {name: ServerProc(redis.url, checkpoint, tmp_path / f"{name}.log", instance_id=name, **tls)
               for name in ("a", "b")}
    # c trusts another CA for forwarding: it cannot verify a's certificate
    servers["c"] = ServerProc(redis.url, checkpoint, tmp_path / "c.log", instance_id="c",
                              forward_ca=pki / "other-ca.pem", **tls)
    try:
        start_together(list(servers.values()), channel=lambda s: grpc.secure_channel(f"127.0.0.1:{s.port}", creds))
        a, b, c = servers["a"], servers["b"], servers["c"]
        a.stub.StartTrack(pb.StartTrackRequest(track_id="t-1", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0]),
                                               options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)),
                          metadata=AUTH, timeout=30)
        got = [_push(b, "t-1", frames[1]), _push(a, "t-1", frames[2])]  # b forwards to a over mTLS
        info = b.stub.GetTrack(pb.GetTrackRequest(track_id="t-1"), metadata=AUTH, timeout=10)
        assert info.owner == "a" and info.frames_processed == 2
        reqs = [pb.PushFrameRequest(track_id="t-1", frame=frame_pb(frames[k])) for k in (3, 4)]
        watch = b.stub.WatchTracks(pb.WatchTracksRequest(track_ids=["t-1"], from_frame=1), metadata=AUTH,
                                   timeout=60)  # a replay and live results of a's track, read on b
        got += list(b.stub.PushFrames(iter(reqs), metadata=AUTH, timeout=60))
        assert [(r.frame_number, r.status) for r in got] == [(k, pb.TRACKING) for k in (1, 2, 3, 4)]
        np.testing.assert_allclose([xywh(r.box) for r in got], expected[:4], atol=1e-3)
        stopped = b.stub.StopTrack(pb.StopTrackRequest(track_id="t-1"), metadata=AUTH, timeout=10)
        assert stopped.owner == "a" and stopped.status == pb.STOPPED
        seen = []
        for r in watch:
            seen.append((r.frame_number, r.status))
            if r.status == pb.STOPPED:
                break
        assert seen == [(1, pb.TRACKING), (2, pb.TRACKING), (3, pb.TRACKING), (4, pb.TRACKING), (4, pb.STOPPED)]
        text = b.metrics_text()
        for method in ("PushFrame", "GetTrack", "PushFrames", "StopTrack"):
            assert metric_value(text, "lorat_forwarded_calls_total", f'method="{method}"') >= 1, method
        with pytest.raises(grpc.RpcError) as err:  # the token still counts on the replica the caller reached
            b.stub.GetTrack(pb.GetTrackRequest(track_id="t-1"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # A replica that trusts another CA for forwarding cannot verify the owner: UNAVAILABLE, not a hang.
        a.stub.StartTrack(pb.StartTrackRequest(track_id="t-2", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])), metadata=AUTH, timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            _push(c, "t-2", frames[1])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "held by server 'a'" in (err.value.details() or "")
        assert _push(a, "t-2", frames[1]).frame_number == 1  # the frame was not applied by the failed forward
    finally:
        for s in servers.values():
            s.kill()
        redis.stop()
