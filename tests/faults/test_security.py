"""Authentication (bearer tokens, reloadable; TLS and mutual TLS), what a source may open, and secrets
that never leave the server (logs, results, error messages, metrics, Redis Streams)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc
from lorat_client import Client

from ..service.conftest import ROOT, ServerProc, box_pb, frame_pb, free_port, make_frames, redis_binary

REDIS_PW = "redispw-s3cr3t"
CAM_PW = "campw-h1dden"
QUERY_TOKEN = "qtok-789xyz"
SECRETS = (REDIS_PW, CAM_PW, QUERY_TOKEN)


@pytest.fixture
def redis_with_password():  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", REDIS_PW],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PW)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield f"redis://:{REDIS_PW}@127.0.0.1:{port}/0", client
    proc.terminate()
    proc.wait(5)


def _code(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def test_tokens_sources_and_secrets(redis_with_password, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url, rclient = redis_with_password
    tokens = tmp_path / "tokens"
    tokens.write_text("# callers\nfirst-token\n")
    log = tmp_path / "s.log"
    s = ServerProc(url, checkpoint, log, auth_token_file=tokens).start()  # health needs no token
    good = (("authorization", "Bearer first-token"),)
    try:
        stub = s.stub
        assert _code(lambda: stub.ListTracks(pb.ListTracksRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        bad = (("authorization", "Bearer wrong"),)
        assert _code(lambda: stub.ListTracks(pb.ListTracksRequest(), metadata=bad, timeout=10)) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: next(stub.WatchTracks(pb.WatchTracksRequest(), timeout=10))) \
            == grpc.StatusCode.UNAUTHENTICATED
        frames, boxes = make_frames(51, 3)
        assert _code(lambda: stub.StartTrack(pb.StartTrackRequest(
            first_frame=frame_pb(frames[0]), initial_box=box_pb(boxes[0])), timeout=10)) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert stub.ListTracks(pb.ListTracksRequest(), metadata=good, timeout=10).tracks == []

        # The SDK and lorat-client take the token.
        sdk = Client(f"127.0.0.1:{s.port}", token="first-token")
        assert sdk.list() == []
        sdk.close()

        # Rotation without a restart: the new token works, the old one stops working.
        tokens.write_text("second-token\n")
        os.utime(tokens, ns=(1, time.time_ns() + 10**9))
        time.sleep(1.2)  # the file is checked at most once a second
        new = (("authorization", "Bearer second-token"),)
        assert stub.ListTracks(pb.ListTracksRequest(), metadata=new, timeout=10).tracks == []
        assert _code(lambda: stub.ListTracks(pb.ListTracksRequest(), metadata=good, timeout=10)) \
            == grpc.StatusCode.UNAUTHENTICATED

        # Sources: only rtsp/rtsps with a host; no caller option overrides the server's.
        for src in (pb.RtspSource(url="file:///etc/hostname"), pb.RtspSource(url="http://127.0.0.1:1/x"),
                    pb.RtspSource(url="rtsp://"),
                    pb.RtspSource(url="rtsp://127.0.0.1:1/x", options={"protocol_whitelist": "file,rtsp"}),
                    pb.RtspSource(url="rtsp://127.0.0.1:1/x", options={"rtsp_transport": "file"})):
            with pytest.raises(grpc.RpcError) as err:
                stub.StartTrack(pb.StartTrackRequest(track_id="src", rtsp=src, initial_box=box_pb(boxes[0])),
                                metadata=new, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "source state track_id=src" not in log.read_text()  # refused before anything was opened

        # A camera URL with a password and a query token: the failure names the camera, never the secrets.
        cam = f"rtsp://admin:{CAM_PW}@127.0.0.1:{free_port()}/live?token={QUERY_TOKEN}"
        with pytest.raises(grpc.RpcError) as err:
            stub.StartTrack(pb.StartTrackRequest(track_id="cam", rtsp=pb.RtspSource(url=cam),
                                                 initial_box=box_pb(boxes[0])), metadata=new, timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "127.0.0.1" in err.value.details()
        messages = [err.value.details()]

        # A push track, its results (watched) and streams.
        watch = stub.WatchTracks(pb.WatchTracksRequest(), metadata=new)
        stub.StartTrack(pb.StartTrackRequest(track_id="ok", first_frame=frame_pb(frames[0]),
                                             initial_box=box_pb(boxes[0])), metadata=new, timeout=30)
        stub.PushFrame(pb.PushFrameRequest(track_id="ok", frame=frame_pb(frames[1])), metadata=new, timeout=30)
        stub.StopTrack(pb.StopTrackRequest(track_id="ok"), metadata=new, timeout=30)
        results = []
        for r in watch:
            results.append(str(r))
            if r.status == pb.STOPPED:
                break
        watch.cancel()
        time.sleep(0.5)  # the stream writer flushes
        stream_text = []
        for key in rclient.scan_iter("*"):
            kind = rclient.type(key)
            if kind == b"stream":
                stream_text.append(str(rclient.xrange(key)))
            elif kind == b"hash":
                stream_text.append(str({k: v for k, v in rclient.hgetall(key).items() if k != b"template"}))
        places = {"log": log.read_text(), "metrics": s.metrics_text(), "results": "\n".join(results),
                  "errors": "\n".join(messages), "redis": "\n".join(stream_text)}
        for place, text in places.items():
            for secret in SECRETS:
                assert secret not in text, f"{secret} appears in {place}"
        assert "redis://" in places["log"]  # the Redis URL is logged, without its password
    finally:
        s.kill()


pki_needed = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed for certificates")


def _pki(d: Path) -> Path:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=test-ca")
    exts = (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth"))
    for name, ext in exts:
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


@pki_needed
def test_mutual_tls_and_the_public_address_rule(redis_proc, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki = _pki(tmp_path)
    port = free_port()
    log = open(tmp_path / "tls.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--grpc-port", str(port), "--metrics-port", "-1", "--checkpoint",
         str(checkpoint), "--redis-url", redis_proc.url, "--tls-cert", str(pki / "server.pem"),
         "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem")],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)
    try:
        def channel(with_cert: bool) -> grpc.Channel:
            creds = grpc.ssl_channel_credentials(
                root_certificates=(pki / "ca.pem").read_bytes(),
                private_key=(pki / "client.key").read_bytes() if with_cert else None,
                certificate_chain=(pki / "client.pem").read_bytes() if with_cert else None)
            return grpc.secure_channel(f"127.0.0.1:{port}", creds)

        ok = channel(True)
        deadline = time.monotonic() + 90
        while True:
            try:
                st = health_pb2_grpc.HealthStub(ok).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if st.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "tls.log").read_text()[-2000:]
            time.sleep(0.2)
        assert pb_grpc.TrackerStub(ok).ListTracks(pb.ListTracksRequest(), timeout=10).tracks == []
        anonymous = channel(False)
        assert _code(lambda: pb_grpc.TrackerStub(anonymous).ListTracks(pb.ListTracksRequest(), timeout=5)) \
            == grpc.StatusCode.UNAVAILABLE  # the handshake fails without a client certificate
        plain = grpc.insecure_channel(f"127.0.0.1:{port}")
        assert _code(lambda: pb_grpc.TrackerStub(plain).ListTracks(pb.ListTracksRequest(), timeout=5)) \
            == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
    # 0.0.0.0 with no token file and no mTLS: refused unless --allow-unauthenticated.
    out = subprocess.run([sys.executable, "-m", "server", "--grpc-host", "0.0.0.0", "--grpc-port", "0",
                          "--metrics-port", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--auth-token-file" in out.stderr and "--allow-unauthenticated" in out.stderr
