"""Track state on a real 3-node Redis Cluster: every script stays in one slot, batches spread over the
masters, SCAN sees every node, and the stored data layout version is enforced."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.cluster import RedisCluster

from server.errors import ServiceError
from server.state.restore import track_from_stored
from server.state.store import LAYOUT, RENEW_OK, RedisStateStore

IDS = [f"t{i}" for i in range(24)]


def test_store_on_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        store = RedisStateStore(cluster.url, "a#n1", lease_ttl_s=5, cluster=True)
        other = RedisStateStore(cluster.url, "b#n2", lease_ttl_s=5, cluster=True)
        try:
            claims = [await store.claim(tid) for tid in IDS]
            assert all(c.ok for c in claims)
            assert not (await other.claim(IDS[0])).ok  # atomic across replicas, on the cluster too
            for tid, c in zip(IDS, claims):
                assert await store.save_full(tid, c.epoch, {"source": "push"}, b"s0", "TRACKING", b"tpl") == ""
            # one batch of writes touching every master, one call
            assert await store.save_states([(t, c.epoch, b"s1", "TRACKING") for t, c in zip(IDS, claims)]) \
                == [""] * len(IDS)
            # a stale epoch writes nothing
            assert await store.save_states([(IDS[0], claims[0].epoch + 7, b"bad", "TRACKING")]) == ["a#n1"]
            renewed = await store.renew([(t, c.epoch) for t, c in zip(IDS, claims)])
            assert {code for code, _ in renewed.values()} == {RENEW_OK}
            assert sorted(await store.track_ids()) == sorted(IDS)  # SCAN over every master
            stored = await store.load(IDS[3])
            assert stored is not None and stored.state == b"s1" and stored.template == b"tpl"
            assert stored.layout == LAYOUT
            assert await store.end(IDS[0], claims[0].epoch, None, "STOPPED") == ""
            assert (await other.claim(IDS[0])).ok  # the id is free again
        finally:
            await store.close()
            await other.close()

    asyncio.run(run())
    nodes = RedisCluster.from_url(cluster.url)
    try:
        used = {nodes.keyslot(f"lorat:track:{{{t}}}") for t in IDS}
        owners = {nodes.get_node_from_key(f"lorat:track:{{{t}}}").port for t in IDS}
        assert len(owners) == 3 and len(used) == len(IDS)  # the batch really spanned all three masters
        for t in IDS:  # every key of a track in the same slot
            assert nodes.keyslot(f"lorat:lease:{{{t}}}") == nodes.keyslot(f"lorat:track:{{{t}}}")
    finally:
        nodes.close()


def test_newer_layout_is_refused_clearly(cluster) -> None:  # type: ignore[no-untyped-def]
    async def load(tid: str):  # type: ignore[no-untyped-def]
        store = RedisStateStore(cluster.url, "a#n1", cluster=True)
        try:
            return await store.load(tid)
        finally:
            await store.close()

    nodes = RedisCluster.from_url(cluster.url)
    try:
        nodes.hset("lorat:track:{future}", mapping={"meta": "{}", "state": b"x", "template": b"y",
                                                    "status": "TRACKING", "epoch": 3, "layout": LAYOUT + 1})
        nodes.hset("lorat:track:{old}", mapping={"meta": "{}", "state": b"x", "status": "TRACKING", "epoch": 1})
    finally:
        nodes.close()
    future = asyncio.run(load("future"))
    assert future is not None and future.layout == LAYOUT + 1
    with pytest.raises(ServiceError, match=f"data layout {LAYOUT + 1}"):
        track_from_stored("future", future, ("m",))
    old = asyncio.run(load("old"))
    assert old is not None and old.layout == 1  # the layout before the field existed: read as before


def test_single_node_client_is_refused_by_the_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    """Why --redis-cluster exists: a plain client gets MOVED for keys on other nodes."""
    plain = redis.Redis.from_url(cluster.url)
    try:
        with pytest.raises(redis.exceptions.MovedError):
            for t in IDS:
                plain.get(f"lorat:track:{{{t}}}")
    finally:
        plain.close()


def test_an_unreachable_cluster_is_a_store_outage_not_a_crash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """redis-py's cluster errors (RedisClusterException: no node answered CLUSTER SLOTS) do not derive from
    RedisError. They must surface as StoreUnavailable, which the commit task and lease keeper retry; an
    escaped one ended the commit task during a master failover on a loaded machine (every later result
    held). The registry, likewise, starts and keeps beating through it."""
    from server.replicas import ReplicaRegistry
    from server.state.connect import redis_client
    from server.state.store import StoreUnavailable

    from .cluster import RedisClusterProc

    c = RedisClusterProc().start()

    async def run() -> None:
        store = RedisStateStore(c.url, "a", lease_ttl_s=5, cluster=True)
        registry = ReplicaRegistry(redis_client(c.url, cluster=True), "a", "127.0.0.1:1", 4, lambda: 0, ttl_s=2)
        try:
            claim = await store.claim("gone")
            assert claim.ok
            for port in list(c.procs):
                c.kill(port)
            for attempt in (store.ping(), store.renew([("gone", claim.epoch)]),
                            store.save_states([("gone", claim.epoch, b"s", "TRACKING")]), store.load("gone")):
                with pytest.raises(StoreUnavailable):
                    await attempt
            await registry.register()  # Redis away: it starts and registers when Redis is back
            await registry.close()
        finally:
            await store.close()
            await registry.redis.aclose()

    try:
        asyncio.run(run())
    finally:
        c.stop()


def test_the_lease_names_instance_and_boot_nonce(cluster) -> None:  # type: ignore[no-untyped-def]
    """A second process under the same instance id (a duplicate pod, or a restart within the lease) has
    another boot nonce: it can neither renew nor write through its predecessor's lease."""
    from server.state.store import RENEW_LOST, lease_parts

    async def run() -> None:
        first = RedisStateStore(cluster.url, "twin", lease_ttl_s=5, cluster=True)
        second = RedisStateStore(cluster.url, "twin", lease_ttl_s=5, cluster=True)
        try:
            assert first.nonce != second.nonce
            claim = await first.claim("nonce-t")
            assert await first.save_full("nonce-t", claim.epoch, {"source": "push"}, b"s0", "TRACKING", b"t") == ""
            value = await first._redis.get(first.lease_key("nonce-t"))
            assert value.decode() == f"twin {first.nonce} {claim.epoch}"
            assert lease_parts(value) == ("twin", first.nonce) and await second.lease_holder("nonce-t") == "twin"
            assert await second.save_states([("nonce-t", claim.epoch, b"bad", "TRACKING")]) == ["twin"]
            assert (await second.renew([("nonce-t", claim.epoch)]))["nonce-t"][0] == RENEW_LOST
            assert not (await second.acquire("nonce-t")).ok
            assert (await first.load("nonce-t")).state == b"s0"  # nothing of the second one's went through
        finally:
            await first.close()
            await second.close()

    asyncio.run(run())
    assert lease_parts(b"old-style 7") == ("old-style", "")  # the layout before the nonce: held by that instance
    assert lease_parts(b"pod a 0123456789ab 7") == ("pod a", "0123456789ab") and lease_parts(None) == ("", "")
