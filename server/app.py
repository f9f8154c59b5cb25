"""Process wiring: settings -> metrics, gRPC (health, reflection, Tracker), Redis, model, manager; and the
SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import uuid
import warnings
from functools import partial
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import LoRAT, TrackingEngine, load_model
from lorat_infer.defaults import RandomWeightsWarning, default_tracker_model
from lorat_infer.loading import default_model_path

from . import stop_watchdog
from .core import TrackManager
from .executor import BatchExecutor, register_engine_info
from .health import HealthState
from .log import event, setup_logging
from .metrics import Metrics
from .models import load_engines, parse_model_specs
from .security import BearerAuth, TokenFile, server_credentials
from .service import TrackerService, add_to_server
from .settings import Settings
from .state.embedded import EmbeddedRedis
from .state.store import RedisStateStore
from .urlpolicy import redact

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Tracker"].full_name
# A SIGTERMed server exits within --drain-timeout-s plus this, else stop_watchdog dumps its stacks and exits.
STOP_MARGIN_S = 20.0


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def load_serving_model(settings: Settings) -> tuple[LoRAT, str]:
    """The configured checkpoint, else the built-in default, else (loudly) random tiny weights."""
    if settings.checkpoint:
        path = Path(settings.checkpoint)
        model = load_model(path)
        return model, f"{model.config.name}@{_file_digest(path)}"
    path = default_model_path()
    if path.is_file():
        model = default_tracker_model(allow_random=False)
        return model, f"{model.config.name}@{_file_digest(path)}"
    banner = "!" * 100
    for line in (banner, f"NO MODEL: {path} is missing and no --checkpoint was given.",
                 "SERVING AN UNTRAINED RANDOM-WEIGHTS 'tiny' MODEL: its boxes are meaningless.",
                 "Pass --checkpoint / LORAT_CHECKPOINT with a merged .safetensors file (see lorat-export).",
                 banner):
        event("untrained_model", logging.WARNING, detail=line)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the banner above already says it, louder
        model = default_tracker_model(allow_random=True)
    return model, f"{model.config.name}@untrained-seed0"


async def serve(settings: Settings) -> None:
    setup_logging(settings.log_level)
    settings.check_exposure()
    event("starting", settings=redact(" ".join(f"{k}={v}" for k, v in vars(settings).items())))
    # The embedded Redis starts first, before any thread exists (its child setup runs a preexec hook).
    embedded: EmbeddedRedis | None = None
    redis_url = settings.redis_url
    if not redis_url:
        embedded = EmbeddedRedis().start()
        redis_url = embedded.url
        event("embedded_redis", url=redact(redis_url),
              note="private redis-server without persistence; set --redis-url to share state across servers")
    try:
        metrics = Metrics()
        if settings.metrics_port >= 0:
            mport = _bind("--metrics-port", settings.grpc_host, settings.metrics_port,
                          lambda: metrics.serve(settings.metrics_port, settings.grpc_host))
            event("metrics_listening", url=f"http://{settings.grpc_host}:{mport}/metrics")

        health_servicer = health.aio.HealthServicer()
        health_state = HealthState(health_servicer, metrics, slow_p99_s=settings.redis_slow_p99_ms / 1000)
        await health_state.init()
        source_factory = _rtsp_factory(settings)
        tracker = TrackerService(max_watchers=settings.max_watchers)
        limit = settings.max_message_bytes
        interceptors = [BearerAuth(TokenFile(settings.auth_token_file))] if settings.auth_token_file else []
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if settings.max_connection_age_s > 0:  # clients reconnect (through the balancer) after this
            options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000))]
        server = grpc.aio.server(options=options,
                                 interceptors=interceptors, maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
        add_to_server(tracker, server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        if settings.tls_cert:
            creds = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            port = _bind("--grpc-port", settings.grpc_host, settings.grpc_port,
                         lambda: server.add_secure_port(address, creds))
        else:
            port = _bind("--grpc-port", settings.grpc_host, settings.grpc_port,
                         lambda: server.add_insecure_port(address))
        await server.start()
        event("grpc_listening", address=f"{settings.grpc_host}:{port}", tls=bool(settings.tls_cert),
              mtls=bool(settings.tls_client_ca), auth="token" if settings.auth_token_file else "none")

        stop = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: (received.append(s.name.lower()), stop.set()))

        model, model_id = await asyncio.to_thread(load_serving_model, settings)
        engine = await asyncio.to_thread(TrackingEngine, model, device=settings.device, precision=settings.precision,
                                         compile={"on": True, "off": False}.get(settings.compile))
        event("model_loaded", model_id=model_id, device=settings.device, precision=engine.precision,
              params=sum(p.numel() for p in model.parameters()))
        owner = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        store = RedisStateStore(redis_url, owner, prefix=settings.redis_prefix, track_ttl_s=settings.track_ttl_s,
                                lease_ttl_s=settings.lease_ttl_s,
                                ended_retention_s=settings.ended_retention_s,
                                on_error=lambda op: metrics.redis_errors.labels(op).inc(),
                                on_latency=lambda op, s: metrics.redis_op_seconds.labels(op).observe(s),
                                cluster=settings.redis_cluster)
        sinks = (_extra_sinks(redis_url, settings.redis_prefix, metrics, settings.result_stream_ttl_s,
                              settings.redis_cluster)
                 if settings.publish_streams else [])
        executor = BatchExecutor(engine)
        executors = {model_id: executor}
        extra = await asyncio.to_thread(load_engines, parse_model_specs(settings.model), model_id,
                                        settings.device, settings.precision,
                                        {"on": True, "off": False}.get(settings.compile))
        for mid, extra_engine in extra.items():
            executors[mid] = BatchExecutor(extra_engine)
            event("model_loaded", model_id=mid, family=extra_engine.family.name, device=settings.device,
                  precision=extra_engine.precision, params=sum(p.numel() for p in extra_engine.model.parameters()))
        register_engine_info(metrics.registry, executors)  # lorat_engine_info: what "auto" resolved to
        if source_factory is not None:  # camera H.264 on the engine's GPU when it has one (else CPU, logged)
            source_factory = partial(source_factory, hwaccel=executor.video_hwaccel())
        manager = TrackManager(settings, executor, model_id, metrics, store, sinks, source_factory,
                               executors=executors)
        replicas, forwarder = await _join_replicas(settings, redis_url, owner, port, manager)
        manager.start(health_state)
        tracker.manager = manager
        tracker.forwarder = forwarder
        console = await _start_console(settings, manager)
        health_state.set_ready(True)
        event("ready", owner=owner, model_id=model_id, grpc_port=port)

        await stop.wait()
        event(received[0] if received else "sigterm",
              note="stop accepting, finish in-flight batches, write state to Redis")
        watchdog = stop_watchdog.arm(loop, settings.drain_timeout_s + STOP_MARGIN_S)
        calls_end = loop.time() + settings.drain_timeout_s  # in-flight calls share the drain's budget
        health_state.set_ready(False)
        await health_servicer.enter_graceful_shutdown()
        if console is not None:  # no new tracks from the browser while draining
            await console.close()
        await replicas.close()  # others stop forwarding here; our tracks' leases go with the drain
        await manager.drain()
        cut = await tracker.calls.finish(max(1.0, calls_end - loop.time()))  # forwarded calls: their owners
        if cut:
            event("calls_cut", 30, calls=cut, note="still running after --drain-timeout-s: answered UNAVAILABLE")
        with contextlib.suppress(Exception):
            await replicas.redis.aclose()
        for sink in sinks:
            with contextlib.suppress(Exception):
                await sink.close(timeout=2.0)
            with contextlib.suppress(Exception):  # the Redis client _extra_sinks made for it
                await sink.redis.aclose()
        await server.stop(grace=2.0)
        if forwarder is not None:  # after the gRPC server: calls it forwarded finish first (their frames count)
            await forwarder.close()
        for each in executors.values():
            each.shutdown()
        watchdog.cancel()
    finally:
        if embedded is not None:
            embedded.stop()
    event("stopped")


async def _join_replicas(settings: Settings, redis_url: str, owner: str, port: int, manager: TrackManager):  # type: ignore[no-untyped-def]
    """Register in the replica registry (refusing a duplicate --instance-id) and build the forwarder."""
    from .forward import Forwarder, forward_credentials
    from .placement import Placement
    from .replicas import ReplicaRegistry
    from .state.connect import redis_client

    host = settings.grpc_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    address = settings.advertise_address or f"{host}:{port}"
    # A 2 s timeout: on a loaded machine a missed beat or two is fine (the entry lives 10 s), a refusal is not.
    replicas = ReplicaRegistry(redis_client(redis_url, cluster=settings.redis_cluster, timeout_s=2.0), owner, address,
                               settings.max_tracks, lambda: len(manager.tracks), prefix=settings.redis_prefix,
                               nonce=manager.store.nonce if manager.store is not None else "")
    await replicas.register()
    # camera tracks: the index and rendezvous adoption over the live replicas (server/placement.py)
    every_s = max(1.0, settings.lease_ttl_s / 2)  # the adoption period (the lease keeper's periodic)
    manager.placement = Placement(replicas.redis, replicas, prefix=settings.redis_prefix,
                                  silent_s=max(3.0, settings.lease_ttl_s), patience_s=max(3.0, 2 * every_s))
    credentials = (forward_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca,
                                       settings.forward_ca) if settings.tls_cert else None)
    # blocking XREADs of other replicas' result streams (WatchTracks): a socket timeout above their 1 s block
    streams = (redis_client(redis_url, cluster=settings.redis_cluster, timeout_s=5.0)
               if settings.publish_streams else None)
    return replicas, Forwarder(manager.store, replicas, max_message_bytes=settings.max_message_bytes,
                               owner_timeout_s=max(5.0, 2 * settings.lease_ttl_s), credentials=credentials,
                               tls_name=settings.forward_tls_name, stream_redis=streams,
                               stream_prefix=f"{settings.redis_prefix}:results")


async def _start_console(settings: Settings, manager: TrackManager):  # type: ignore[no-untyped-def]
    """The web console (server/console, docs/console.md) on --http-port, unless that is -1."""
    if settings.http_port < 0:
        return None
    from .console import start_console  # aiohttp is imported only when the console is on

    return await start_console(settings, manager)


def _bind(flag: str, host: str, port: int, bind):  # type: ignore[no-untyped-def]
    """Run a bind; a failure (port in use, ...) becomes an error naming the address and its flag."""
    reason = "the address was not bound"
    try:
        bound = bind()
    except (OSError, RuntimeError) as exc:
        bound, reason = 0, exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if not bound:  # grpc says only "Failed to bind" (older releases return 0): ask the OS why
        try:
            with socket.socket() as probe:
                probe.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
        raise OSError(f"cannot listen on {host}:{port} ({flag}): {reason}")
    return bound


def _rtsp_factory(settings: Settings):  # type: ignore[no-untyped-def]
    """RtspSource with the configured deadlines and backoff, if the module is present."""
    try:
        from .sources.rtsp import RtspSource
    except ImportError as exc:
        event("rtsp_unavailable", 30, error=repr(exc))
        return None
    return partial(
        RtspSource,
        open_timeout=settings.rtsp_open_timeout_s,
        read_timeout=settings.rtsp_read_timeout_s,
        backoff_initial=settings.rtsp_backoff_initial_s,
        backoff_max=settings.rtsp_backoff_max_s,
        max_attempts=settings.rtsp_max_attempts,
    )


def _extra_sinks(redis_url: str, redis_prefix: str, metrics: Metrics, ttl_s: float, cluster: bool = False) -> list:
    """Redis Streams publishing (`publishing/redis_streams.py`), if that module is present."""
    try:
        from .publishing.redis_streams import RedisStreamPublisher
        from .state.connect import redis_client
    except ImportError:
        return []
    try:
        client = redis_client(redis_url, cluster=cluster)
        count_error = lambda op, exc: metrics.redis_errors.labels(op).inc()  # noqa: E731
        return [RedisStreamPublisher(client, prefix=f"{redis_prefix}:results", on_error=count_error,
                                     stream_ttl_s=ttl_s)]
    except Exception as exc:  # its constructor contract is the other module's; never fail the server
        event("redis_streams_unavailable", 30, error=redact(repr(exc)))
        return []
