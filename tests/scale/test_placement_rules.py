"""The placement rule itself (server/placement.py), without servers: weighted rendezvous hashing spreads
tracks in proportion to free capacity, never onto a full replica, and a replica leaving moves only its own
share. Deterministic (hashes, not random numbers)."""

from __future__ import annotations

import collections

from server.placement import Entry, ranking

IDS = [f"cam-{i}" for i in range(3000)]


def _winners(free: dict[str, int]) -> dict[str, str]:
    return {tid: ranking(tid, free)[0] for tid in IDS}


def test_shares_follow_free_capacity() -> None:
    even = collections.Counter(_winners({"a": 100, "b": 100, "c": 100}).values())
    assert all(abs(even[r] / len(IDS) - 1 / 3) < 0.04 for r in "abc"), even
    skewed = collections.Counter(_winners({"a": 300, "b": 100, "c": 100}).values())
    assert abs(skewed["a"] / len(IDS) - 0.6) < 0.04 and abs(skewed["b"] / len(IDS) - 0.2) < 0.04, skewed


def test_a_full_replica_gets_nothing() -> None:
    assert set(_winners({"a": 0, "b": 5, "c": 5}).values()) == {"b", "c"}
    assert ranking("cam-1", {"a": 0, "b": 0}) == []


def test_a_replica_leaving_moves_only_its_own_share() -> None:
    before = _winners({"a": 10, "b": 10, "c": 10})
    after = _winners({"b": 10, "c": 10})
    moved = [tid for tid in IDS if before[tid] != after[tid]]
    assert moved and all(before[tid] == "a" for tid in moved)


def test_every_replica_ranks_the_same_way() -> None:
    free = {"a": 7, "b": 3, "c": 9}
    assert ranking("cam-42", free) == ranking("cam-42", dict(reversed(list(free.items()))))


def test_index_entries_round_trip() -> None:
    e = Entry("pod-7", "abc123", 12)
    assert Entry.parse(e.text().encode()) == e
    assert Entry.parse(b"garbage") is None and Entry.parse(b"a b notanumber") is None
