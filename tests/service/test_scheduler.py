"""The engine loop's batching rules, in process, with the real tiny engine (no gRPC, no Redis)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from lorat_infer import TrackingEngine, build_model
from server import errors
from server.engine_loop import EngineLoop
from server.executor import BatchExecutor
from server.state import adapter
from server.state.restore import track_from_stored
from server.state.store import StoredTrack
from server.tracks import Options, PendingFrame, Track


@pytest.fixture(scope="module")
def executor() -> BatchExecutor:
    torch.manual_seed(0)
    return BatchExecutor(TrackingEngine(build_model("tiny"), device="cpu", precision="fp32"))


def _frame(n: int) -> PendingFrame:
    rgb = np.random.default_rng(n).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return PendingFrame(rgb=rgb, frame_number=n, pts=n, capture_time=None, receive_time=time.time())


async def _tracks(executor: BatchExecutor, n: int, policy: str = "latest") -> list[Track]:
    states = await executor.initialize([_frame(0).rgb] * n, [[40, 30, 30, 30]] * n)
    return [Track(track_id=f"t{i}", state=s, model_id="m", options=Options(policy, 10.0, 8))
            for i, s in enumerate(states)]


def test_batches_respect_size_and_one_frame_per_track(executor: BatchExecutor) -> None:
    async def run() -> list[list[tuple[str, int]]]:
        batches: list[list[tuple[str, int]]] = []

        def on_outputs(plan, pairs, seconds) -> None:  # type: ignore[no-untyped-def]
            batches.append([(t.track_id, f.frame_number) for t, f in zip(plan.tracks, plan.frames)])
            for t, (state, _) in zip(plan.tracks, pairs):
                t.state = state

        sched = EngineLoop({"m": executor}, max_batch_size=3, max_wait_s=0.05, on_drop=lambda *a: None,
                           on_outputs=on_outputs, on_fail=lambda *a: None)
        tracks = await _tracks(executor, 5, policy="fifo")
        for t in tracks:
            sched.submit(t, _frame(1))
        sched.submit(tracks[0], _frame(2))  # a second frame of t0 must wait for the next batch
        task = asyncio.create_task(sched.run())
        await asyncio.wait_for(sched.wait_idle(), 30)
        sched.stop()
        await task
        return batches

    batches = asyncio.run(run())
    assert all(len(b) <= 3 for b in batches)
    assert all(len({tid for tid, _ in b}) == len(b) for b in batches)  # never a track twice in a batch
    flat = [x for b in batches for x in b]
    assert sorted(flat) == sorted([(f"t{i}", 1) for i in range(5)] + [("t0", 2)])
    assert flat.index(("t0", 1)) < flat.index(("t0", 2))  # a track's frames run in order
    assert batches[0] == [("t0", 1), ("t1", 1), ("t2", 1)]  # a full batch goes at once, oldest first


def test_a_lone_frame_waits_at_most_max_wait(executor: BatchExecutor) -> None:
    async def run() -> float:
        done = asyncio.Event()

        def on_outputs(*_a) -> None:  # type: ignore[no-untyped-def]
            done.set()

        sched = EngineLoop({"m": executor}, max_batch_size=8, max_wait_s=0.1, on_drop=lambda *a: None,
                           on_outputs=on_outputs, on_fail=lambda *a: None)
        (track,) = await _tracks(executor, 1)
        task = asyncio.create_task(sched.run())
        t0 = time.monotonic()
        sched.submit(track, _frame(1))  # the other 7 slots never fill: nobody waits for slow streams
        await asyncio.wait_for(done.wait(), 10)
        sched.stop()
        await task
        return time.monotonic() - t0

    assert 0.09 <= asyncio.run(run()) < 2.0


def test_stored_state_from_another_model_or_damaged_is_refused(executor: BatchExecutor) -> None:
    (track,) = asyncio.run(_tracks(executor, 1))
    blob = adapter.encode_template(track.state, "m")
    state = adapter.encode_state(track.state, track.counters())
    stored = StoredTrack(meta=track.meta_dict(), state=state, template=blob, status="TRACKING", epoch=1)
    back = track_from_stored("t0", stored, ("m",))
    assert torch.equal(back.state.template_tokens, track.state.template_tokens)
    np.testing.assert_array_equal(back.state.box_xyxy, track.state.box_xyxy)
    no_counters = adapter.encode_state(track.state, {})
    for bad in (StoredTrack(stored.meta, state, None, "TRACKING", 1),
                StoredTrack(stored.meta, state, blob[:-4], "TRACKING", 1),
                StoredTrack(stored.meta, state, blob, "STOPPED", 1),
                StoredTrack(stored.meta, no_counters, blob, "TRACKING", 1),
                StoredTrack(stored.meta, b"\x80\x04pickle" + state, blob, "TRACKING", 1)):
        with pytest.raises(errors.ServiceError) as info:
            track_from_stored("t0", bad, ("m",))
        assert info.value.code.name == "FAILED_PRECONDITION"
    with pytest.raises(errors.ServiceError, match="model"):
        track_from_stored("t0", stored, ("other-model",))


def test_a_failing_batch_is_reported_and_the_loop_goes_on(executor: BatchExecutor) -> None:
    class FailOnce:
        """The real executor, except that its first step raises (a model or device fault)."""

        def __init__(self, inner: BatchExecutor) -> None:
            self.inner, self.failed = inner, False

        async def step(self, states, frames):  # type: ignore[no-untyped-def]
            if not self.failed:
                self.failed = True
                raise RuntimeError("device lost")
            return await self.inner.step(states, frames)

    async def run() -> tuple[list, list]:
        failures: list = []
        done: list = []

        def on_outputs(plan, pairs, seconds) -> None:  # type: ignore[no-untyped-def]
            done.extend((t.track_id, f.frame_number) for t, f in zip(plan.tracks, plan.frames))

        def on_fail(plan, exc) -> None:  # type: ignore[no-untyped-def]
            failures.extend((t.track_id, f.frame_number, str(exc)) for t, f in zip(plan.tracks, plan.frames))

        sched = EngineLoop({"m": FailOnce(executor)}, max_batch_size=4, max_wait_s=0.01, on_drop=lambda *a: None,
                           on_outputs=on_outputs, on_fail=on_fail)
        tracks = await _tracks(executor, 2)
        task = asyncio.create_task(sched.run())
        for t in tracks:
            sched.submit(t, _frame(1))
        await asyncio.wait_for(sched.wait_idle(), 30)
        for t in tracks:
            sched.submit(t, _frame(2))
        await asyncio.wait_for(sched.wait_idle(), 30)
        sched.stop()
        await task
        return failures, done

    failures, done = asyncio.run(run())
    assert sorted(failures) == [("t0", 1, "device lost"), ("t1", 1, "device lost")]
    assert sorted(done) == [("t0", 2), ("t1", 2)]
