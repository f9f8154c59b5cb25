"""TLS and metadata options over a real TLS gRPC channel.

The LoRAT server itself listens in plaintext (TLS is terminated in front of it), so this test serves the
Tracker service's ListTracks from a minimal in-process servicer behind real TLS credentials: what is under
test is the SDK's channel set-up (root certificates, mutual TLS, metadata), not tracking.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc
from lorat_client import Client, LoratError, RetryPolicy

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make certificates")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)
    exts = (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth"))
    for name, san in exts:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(san + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


class _Recorder(pb_grpc.TrackerServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def ListTracks(self, request, context):  # type: ignore[no-untyped-def]
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.ListTracksResponse(tracks=[pb.TrackInfo(track_id="tls-ok", source_state=pb.SOURCE_PUSH)])


def _serve(pki: Path, require_client_cert: bool) -> tuple[grpc.Server, int, _Recorder]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    rec = _Recorder()
    pb_grpc.add_TrackerServicer_to_server(rec, server)
    creds = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=require_client_cert)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port, rec


def test_tls_with_root_certificates_and_metadata(pki: Path) -> None:
    server, port, rec = _serve(pki, require_client_cert=False)
    try:
        with Client(f"127.0.0.1:{port}", root_certificates=pki / "ca.pem", metadata={"Authorization": "Bearer t0k"},
                    timeout=5) as client:
            assert [t.track_id for t in client.list()] == ["tls-ok"]
        assert rec.metadata[-1]["authorization"] == "Bearer t0k"
        # a plaintext client cannot talk to the TLS port
        with pytest.raises(LoratError) as e, Client(f"127.0.0.1:{port}", timeout=2,
                                                    retry=RetryPolicy(max_attempts=1)) as plain:
            plain.list()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_mutual_tls(pki: Path) -> None:
    server, port, _ = _serve(pki, require_client_cert=True)
    try:
        with Client(f"127.0.0.1:{port}", root_certificates=pki / "ca.pem", private_key=pki / "client.key",
                    certificate_chain=pki / "client.pem", timeout=5) as client:
            assert client.list()[0].track_id == "tls-ok"
        with pytest.raises(LoratError), Client(f"127.0.0.1:{port}", root_certificates=pki / "ca.pem", timeout=2,
                                               retry=RetryPolicy(max_attempts=1)) as no_cert:
            no_cert.list()
        with pytest.raises(ValueError, match="both"):
            Client(f"127.0.0.1:{port}", root_certificates=pki / "ca.pem", private_key=pki / "client.key")
    finally:
        server.stop(0)
