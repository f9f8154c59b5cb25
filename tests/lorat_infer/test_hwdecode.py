"""GPU decode hooks stay off without a CUDA device; the executor reports how the engine runs."""

import asyncio

import numpy as np
import torch
from prometheus_client import CollectorRegistry, generate_latest

from lorat_infer import TrackingEngine, build_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.hwdecode import jpeg_decoder, video_hwaccel
from server.executor import BatchExecutor


def test_decode_hooks_are_off_on_the_cpu():
    cpu = torch.device("cpu")
    assert jpeg_decoder(cpu) is None
    assert video_hwaccel(cpu) is None


def test_executor_reports_the_engine_and_runs_steps():
    engine = TrackingEngine(build_model("tiny"), device="cpu", precision="fp32")
    executor = BatchExecutor(engine)
    try:
        info = executor.engine_info()
        assert info == {"device": "cpu", "family": "lorat", "precision": "fp32", "compile": "false",
                        "cuda_graphs": "false", "max_in_flight": "1"}
        assert executor.jpeg_decoder() is None and executor.video_hwaccel() is None
        registry = CollectorRegistry()
        executor.register_metrics(registry)
        assert 'lorat_engine_info{' in generate_latest(registry).decode()
        seq = generate_sequence(3, 2)
        states = asyncio.run(executor.initialize([seq.frames[0]], [seq.boxes[0]]))
        pairs, seconds = asyncio.run(executor.step(states, [seq.frames[1]]))
        direct = engine.step(states, [seq.frames[1]])
        np.testing.assert_array_equal(pairs[0][1].box_xyxy, direct[0][1].box_xyxy)
        assert seconds > 0
    finally:
        executor.shutdown()
