"""One settings object for the server, from CLI flags and `LORAT_*` environment variables.

Every knob has a default and a one-line doc; `lorat-serve --help` prints them all. Precedence:
CLI flag > environment variable > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

POLICIES = ("latest", "fifo", "every_frame")


def _knob(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    """Server configuration; field docs double as `--help` text and the README table."""

    grpc_host: str = _knob("127.0.0.1", "address the gRPC server binds (0.0.0.0 for all interfaces)")
    grpc_port: int = _knob(50051, "gRPC port (0 picks a free one, logged at start)")
    metrics_port: int = _knob(50052, "Prometheus /metrics HTTP port (0: a free one; -1: off; 9090 is Prometheus')")
    http_port: int = _knob(8080, "web console HTTP port (docs/console.md; 0: a free one; -1: off)")
    console_media_dir: str = _knob("", "folder of video files the console may track (empty: none)")
    redis_url: str = _knob("", "Redis URL for track state; empty starts a private embedded redis-server")
    checkpoint: str = _knob("", "merged .safetensors model; empty serves the built-in default model")
    model: tuple = _knob((), "another model NAME=PATH[,key=value...] served next to the default, named by "
                             "StartTrack.model (repeatable; environment: ';'-separated); e.g. a MixFormerV2 "
                             "file with update_interval=25")
    device: str = _knob("cpu", "torch device for the model (cpu, cuda, cuda:1, ...)")
    precision: str = _knob("auto", "auto | fp32 | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPUs with AVX512-BF16/AMX, "
                                   "else fp32; weights cast once, logged and in lorat_engine_info)")
    compile: str = _knob("auto", "auto / on / off: torch.compile the per-frame step (auto: on CUDA only; on a CPU, on "
                                 "runs one compiled forward per batch instead of the default parallel chunks, no "
                                 "faster here (0.89x), and each batch size compiles at its first use, 5-35 s on 2 "
                                 "shared cores: raise engine_stall_s, e.g. to 120)")
    max_batch_size: int = _knob(0, "most frames (one per track) in one forward pass (0: 64 on a CUDA device, 16 on "
                                   "the CPU)")
    preferred_batch_size: int = _knob(0, "a batch launches as soon as this many frames are ready, without waiting "
                                         "(0: the maximum batch; Triton's preferred_batch_size)")
    max_batch_wait_ms: float = _knob(5.0, "longest a batch waits for more frames once it could launch: from the later "
                                          "of its oldest frame's arrival and a free engine slot (Triton's "
                                          "max_queue_delay)")
    max_tracks: int = _knob(256, "most tracks one server holds; more get RESOURCE_EXHAUSTED")
    max_message_bytes: int = _knob(16 * 1024 * 1024, "largest gRPC message accepted (frames included)")
    max_frame_width: int = _knob(4096, "widest frame accepted (pixels)")
    max_frame_height: int = _knob(4096, "tallest frame accepted (pixels)")
    track_ttl_s: float = _knob(3600.0, "a track's Redis state expires this long after its last activity")
    lease_ttl_s: float = _knob(10.0, "ownership lease; another server may take a track over after this")
    default_policy: str = _knob("latest", "overload policy when a track names none: latest|fifo|every_frame")
    fifo_max_age_s: float = _knob(1.0, "fifo: frames that waited longer than this are dropped (too_old)")
    fifo_max_queue: int = _knob(8, "fifo/every_frame: most frames waiting per track")
    replay_results: int = _knob(256, "results kept per track for WatchTracks replay (from_frame)")
    publish_streams: bool = _knob(True, "also publish every result to Redis Streams (docs/redis-streams.md)")
    lost_confidence: float = _knob(0.05, "results say LOST once confidence stays below this ...")
    lost_frames: int = _knob(10, "... for this many frames in a row (0: never LOST)")
    rtsp_start_timeout_s: float = _knob(30.0, "RTSP: longest StartTrack waits for the first frame (else UNAVAILABLE)")
    rtsp_open_timeout_s: float = _knob(10.0, "RTSP: longest wait from connecting to the first decoded frame")
    rtsp_read_timeout_s: float = _knob(5.0, "RTSP: no-frame watchdog once running; then reconnect")
    rtsp_backoff_initial_s: float = _knob(0.5, "RTSP: first reconnect wait; doubles per attempt, with jitter")
    rtsp_backoff_max_s: float = _knob(30.0, "RTSP: longest reconnect wait")
    rtsp_max_attempts: int = _knob(0, "RTSP: failed attempts in a row before the track fails (0: never give up)")
    decode_threads: int = _knob(2, "threads decoding pushed frames (off the event loop)")
    instance_id: str = _knob("", "this server's lease owner name; empty: host-pid-random")
    redis_prefix: str = _knob("lorat", "prefix of every Redis key this server writes")
    redis_cluster: bool = _knob(False, "--redis-url names one node of a Redis Cluster: use the cluster client "
                                       "(docs/scale-out.md)")
    max_connection_age_s: float = _knob(0.0, "close each client connection after this long (GOAWAY) so that clients "
                                             "rebalance onto new replicas (0: never)")
    max_connection_age_grace_s: float = _knob(30.0, "calls still open on a connection that reached its age may "
                                                    "finish within this")
    advertise_address: str = _knob("", "host:port other replicas forward this one's tracks' calls to (empty: "
                                       "--grpc-host and the bound port; set the pod IP on Kubernetes)")
    drain_timeout_s: float = _knob(10.0, "on SIGTERM, longest wait for in-flight frames before exit")
    log_level: str = _knob("INFO", "DEBUG | INFO | WARNING | ERROR")
    tls_cert: str = _knob("", "PEM certificate chain: serve gRPC over TLS (with --tls-key)")
    tls_key: str = _knob("", "PEM private key of --tls-cert")
    tls_client_ca: str = _knob("", "PEM CA: clients must present a certificate it signed (mutual TLS)")
    forward_ca: str = _knob("", "PEM CA trusted for other replicas' --tls-cert when forwarding to them (empty: "
                                "--tls-client-ca, else --tls-cert's own chain)")
    forward_tls_name: str = _knob("", "name checked in another replica's certificate when forwarding to it (empty: "
                                      "the host of its advertised address)")
    auth_token_file: str = _knob("", "bearer tokens, one per line, re-read when the file changes; empty: no auth")
    allow_unauthenticated: bool = _knob(False, "allow a non-loopback --grpc-host without a token file or mTLS")
    source_schemes: str = _knob("rtsp,rtsps", "URL schemes a pulled source may use (comma-separated)")
    max_concurrent_rpcs: int = _knob(512, "most RPCs served at once; more get RESOURCE_EXHAUSTED")
    max_watchers: int = _knob(64, "most WatchTracks streams at once; more get RESOURCE_EXHAUSTED")
    max_pending_decodes: int = _knob(64, "most pushed frames being decoded at once; more get RESOURCE_EXHAUSTED")
    max_queue_per_track: int = _knob(64, "largest options.max_queue a track may ask for")
    max_labels: int = _knob(32, "most labels per track")
    max_label_bytes: int = _knob(4096, "most characters in all of a track's label keys and values")
    track_idle_timeout_s: float = _knob(300.0, "a push track with no frame for this long is stopped (0: never)")
    ended_retention_s: float = _knob(600.0, "an ended track's Redis hash is kept this long (GetTrack elsewhere)")
    result_stream_ttl_s: float = _knob(3600.0, "a per-track result stream expires this long after its last result")
    redis_slow_p99_ms: float = _knob(100.0, "Redis is 'degraded' (health 'redis') while its p99 latency is above")
    engine_stall_s: float = _knob(30.0, "engine hung: a frame waited this long with no batch completing")
    liveness_grace_s: float = _knob(30.0, "exit (code 3) this long after the engine died or hung")

    def validate(self) -> Settings:
        """Reject nonsense early with a message naming the knob."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.default_policy not in POLICIES:
            raise ValueError(f"default_policy must be one of {POLICIES}, got {self.default_policy!r}")
        for name in ("max_tracks", "max_message_bytes", "max_frame_width",
                     "max_frame_height", "fifo_max_queue", "decode_threads", "max_concurrent_rpcs",
                     "max_watchers", "max_pending_decodes", "max_queue_per_track"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_batch_size", "preferred_batch_size", "max_batch_wait_ms", "track_ttl_s", "lease_ttl_s",
                     "fifo_max_age_s", "lost_frames",
                     "max_labels", "max_label_bytes", "track_idle_timeout_s", "ended_retention_s",
                     "result_stream_ttl_s", "redis_slow_p99_ms", "engine_stall_s", "liveness_grace_s",
                     "max_connection_age_s", "max_connection_age_grace_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lease_ttl_s <= 0.05:
            raise ValueError("lease_ttl_s must be > 0.05")
        if self.redis_cluster and not self.redis_url:
            raise ValueError("redis_cluster needs redis_url (a node of the cluster; the embedded Redis is one node)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if not self.schemes():
            raise ValueError("source_schemes names no scheme")
        from .models import parse_model_specs

        parse_model_specs(self.model)
        return self

    def batch_limits(self) -> tuple[int, int]:
        """(maximum, preferred) batch size: 0 means 64 on a CUDA device (where large batches are nearly free
        and feed the accelerator), 16 on the CPU; the preferred size is at most the maximum."""
        cap = self.max_batch_size or (64 if self.device.strip().lower().startswith("cuda") else 16)
        return cap, min(self.preferred_batch_size or cap, cap)

    def schemes(self) -> tuple[str, ...]:
        return tuple(s.strip().lower() for s in self.source_schemes.split(",") if s.strip())

    def is_public(self) -> bool:
        """Bound to an address other machines can reach."""
        return self.grpc_host not in ("127.0.0.1", "localhost", "::1")

    def check_exposure(self) -> Settings:
        """Refuse to listen beyond loopback with nobody checked, unless told so explicitly."""
        if self.is_public() and not (self.auth_token_file or self.tls_client_ca or self.allow_unauthenticated):
            raise ValueError(f"--grpc-host {self.grpc_host} accepts connections from other machines, but no "
                             "--auth-token-file or --tls-client-ca is set; set one, or pass "
                             "--allow-unauthenticated true to serve without authentication")
        return self

    @staticmethod
    def env_name(name: str) -> str:
        return "LORAT_" + name.upper()


def _convert(kind: type, raw: str) -> Any:
    if kind is tuple:  # a repeatable knob: one value per flag, ';'-separated in the environment
        return tuple(v.strip() for v in raw.split(";") if v.strip())
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {raw!r}")
    return kind(raw)


def _types() -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(Settings)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorat-serve",
        description="LoRAT tracking service (gRPC). Every flag also reads LORAT_<NAME> from the environment.",
    )
    types = _types()
    for f in fields(Settings):
        repeatable = types[f.name] is tuple
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=None,
            type=str if repeatable else (lambda raw, k=types[f.name]: _convert(k, raw)),
            action="append" if repeatable else "store",
            help=f"{f.metadata['doc']} [env {Settings.env_name(f.name)}, default {f.default!r}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults, overridden by `LORAT_*` variables, overridden by flags."""
    env = dict(os.environ) if env is None else env
    types = _types()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(Settings.env_name(f.name))
        if raw is not None and raw != "":
            try:
                values[f.name] = _convert(types[f.name], raw)
            except ValueError as exc:
                raise ValueError(f"{Settings.env_name(f.name)}={raw!r}: {exc}") from exc
    args = build_parser().parse_args(argv)
    for key, value in vars(args).items():
        if value is not None:
            values[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(Settings(), **values).validate()


def settings_table() -> str:
    """Markdown table of every knob (for docs/service.md)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{Settings.env_name(f.name)}` | `{f.default!r}` | "
                    f"{f.metadata['doc'].replace('|', '/')} |")
    return "\n".join(rows)
