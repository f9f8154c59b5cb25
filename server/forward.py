"""A call for a track that another live replica owns is forwarded to that replica, so any replica answers
any call (a round-robin balancer in front of N replicas works; the SDK needs no change).

Why forwarding rather than a hand-off or a redirect: behind a round-robin balancer consecutive pushes of one
track land on different replicas; a hand-off would move the track (and its device state) on almost every
push, and a redirect needs every client to open a channel per replica. Forwarding costs one extra
loopback/LAN hop for (N-1)/N of the calls and never moves the track; the owner stays the only writer.

The owner is found from the track's lease (its instance id, cached for a second) and the replica registry
(its advertised address). A forwarded call carries `lorat-forwarded` so it is never forwarded twice; the
caller's `authorization` header and remaining deadline go with it. When the owner cannot be reached (it
died), the cache entry is dropped and the call is served here (resume from Redis once its lease lapses).

Streams (`PushFrames`, `WatchTracks`) go through server/stream_proxy.py and server/watch_remote.py, which use
this class's channels, metadata and owner lookup. With TLS (`--tls-cert`) the channels to other replicas are
TLS too (`forward_credentials`): they trust `--forward-ca` (else `--tls-client-ca`, else the server's own
chain) and, under mutual TLS, present the server's own certificate as the client certificate.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc
from prometheus_client import Counter

from .errors import ServiceError
from .replicas import ReplicaRegistry
from .state.store import RedisStateStore, StoreUnavailable

MARK = "lorat-forwarded"
_PASS = ("authorization", "lorat-push-id")  # the caller's token; its push id (server/idempotency.py)
FORWARDED = Counter("lorat_forwarded_calls_total",
                    "Calls for a track another live replica owns, answered by forwarding them to it.", ["method"])


def forwarded(context: Any) -> bool:
    """True when this call came from another replica (never forward it again)."""
    return any(k == MARK for k, _ in (context.invocation_metadata() or ()))


def forward_credentials(cert: str, key: str, client_ca: str, forward_ca: str = "") -> grpc.ChannelCredentials:
    """TLS credentials for calls to other replicas of a TLS deployment.

    Trusted roots: `forward_ca` (the CA that signed the replicas' server certificates), else `client_ca`
    (one internal CA for servers and clients, the usual mTLS set-up), else `cert`'s own chain (a
    self-signed certificate shared by the replicas, or a chain file that ends with its CA). Under mutual TLS
    (`client_ca` set) the replica presents its own server certificate and key as its client certificate:
    its peers require one signed by `client_ca`, and that CA must accept it (no extendedKeyUsage, or one
    that includes clientAuth)."""
    roots = Path(forward_ca or client_ca or cert).read_bytes()
    if client_ca:
        return grpc.ssl_channel_credentials(root_certificates=roots, private_key=Path(key).read_bytes(),
                                            certificate_chain=Path(cert).read_bytes())
    return grpc.ssl_channel_credentials(root_certificates=roots)


class Forwarder:
    def __init__(self, store: RedisStateStore, replicas: ReplicaRegistry, *, max_message_bytes: int,
                 holder_cache_s: float = 1.0, owner_timeout_s: float = 10.0,
                 credentials: grpc.ChannelCredentials | None = None, tls_name: str = "",
                 stream_redis: Any = None, stream_prefix: str = "lorat:results") -> None:
        self.store = store
        self.replicas = replicas
        self.max_message_bytes = max_message_bytes
        self.holder_cache_s = holder_cache_s
        self.owner_timeout_s = owner_timeout_s  # an owner that answers nothing this long (paused) counts as away
        self.credentials = credentials  # None: plaintext channels (the replicas serve without TLS)
        self.tls_name = tls_name  # the name checked in the owner's certificate (empty: its address's host)
        self.stream_redis = stream_redis  # a client for blocking XREADs of per-track result streams (or None)
        self.stream_prefix = stream_prefix
        self._holders: dict[str, tuple[float, str]] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.forwarded = 0

    async def owner_address(self, track_id: str, context: Any) -> str | None:
        """The address of the live replica that holds `track_id`, when that is not this one."""
        if forwarded(context):
            return None
        now = time.monotonic()
        hit = self._holders.get(track_id)
        if hit is not None and now - hit[0] < self.holder_cache_s:
            holder = hit[1]
        else:
            try:
                holder = await self.store.lease_holder(track_id)
            except StoreUnavailable:
                return None
            if len(self._holders) > 65536:
                self._holders.clear()
            if holder:  # "no holder" is not cached: the next call may resume it anywhere, asked again then
                self._holders[track_id] = (now, holder)
        if not holder or holder == self.replicas.instance:
            return None
        try:
            address = await self.replicas.address_of(holder)
        except Exception:  # Redis away: serve here (the local path answers UNAVAILABLE if it must)
            return None
        if address is None or address == self.replicas.address:
            return None
        return address

    def _stub(self, address: str) -> pb_grpc.TrackerStub:
        channel = self._channels.get(address)
        if channel is None:
            limit = self.max_message_bytes
            options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", limit),
                                              ("grpc.max_send_message_length", limit)]
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(address, options=options)
            else:
                if self.tls_name:
                    options.append(("grpc.ssl_target_name_override", self.tls_name))
                channel = grpc.aio.secure_channel(address, self.credentials, options=options)
            self._channels[address] = channel
        return pb_grpc.TrackerStub(channel)

    def stub(self, address: str) -> pb_grpc.TrackerStub:
        """The Tracker stub on another replica's (cached) channel."""
        return self._stub(address)

    def metadata(self, context: Any) -> list[tuple[str, str]]:
        """What a forwarded call carries: the caller's `authorization` and the forwarded mark."""
        return self._metadata(context)

    def count(self, method: str) -> None:
        self.forwarded += 1
        FORWARDED.labels(method).inc()

    def _metadata(self, context: Any) -> list[tuple[str, str]]:
        meta = [(k, v) for k, v in (context.invocation_metadata() or ()) if k in _PASS]
        return [*meta, (MARK, self.replicas.instance)]

    def drop(self, track_id: str) -> None:
        self._holders.pop(track_id, None)

    async def call(self, method: str, track_id: str, address: str, request: Any, context: Any) -> Any:
        """Send `request` to the owner's `method`; None when the owner is unreachable (serve it here)."""
        remaining = context.time_remaining()
        capped = remaining is None or remaining > self.owner_timeout_s
        try:
            reply = await getattr(self._stub(address), method)(
                request, metadata=self._metadata(context),
                timeout=self.owner_timeout_s if capped else remaining)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:  # gone, draining or moved: ask again next time
                self.drop(track_id)
                return None
            if exc.code() == grpc.StatusCode.CANCELLED:  # the owner cut it (stopping); our caller is still here
                self.drop(track_id)
                raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                                   f"the server holding track {track_id!r} stopped during the call; retry (with "
                                   "the same lorat-push-id a push is applied once)") from None
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and capped:  # a paused or hung owner
                self.drop(track_id)
                raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                                   f"the server holding track {track_id!r} did not answer within "
                                   f"{self.owner_timeout_s:g}s; retry") from None
            raise ServiceError(exc.code(), exc.details() or "") from None
        self.forwarded += 1
        FORWARDED.labels(method).inc()
        return reply

    async def list_all(self, context: Any) -> list[pb.TrackInfo]:
        """Every other live replica's own tracks (each asked with the forwarded mark: no fan-out loop)."""
        if forwarded(context):
            return []
        out: list[pb.TrackInfo] = []
        for replica in await self.replicas.live():
            if replica.instance == self.replicas.instance:
                continue
            try:
                resp = await self._stub(replica.address).ListTracks(
                    pb.ListTracksRequest(), metadata=self._metadata(context), timeout=5)
            except grpc.aio.AioRpcError:
                continue  # a replica that is going away: its tracks show up once another one takes them
            out.extend(resp.tracks)
        return out

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self.stream_redis is not None:
            with contextlib.suppress(Exception):  # closing only; a Redis already gone is fine
                await self.stream_redis.aclose()
