"""MixFormerV2 through the one engine: batched tracks equal single `Tracker`s, `Tracker` equals the
authors' tracker, state records resume a track with identical boxes, tracker parameters per family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorat_infer import Tracker, TrackingEngine, build_model, load_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.family import state_from_record, state_to_record
from lorat_infer.mixformer import MixFormerV2, TrackerParams, get_config
from lorat_infer.mixformer.pipeline import MixFormerState

from .mixformer_authors import AuthorsTracker
from .mixformer_release import write_authors_checkpoint

TINY = get_config("MixFormerV2-tiny")
FRAMES = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> MixFormerV2:
    """Random weights in the authors' file layout, loaded through load_model; scores around 0.6."""
    path = tmp_path_factory.mktemp("mf") / "mixformerv2_tiny.pth.tar"
    write_authors_checkpoint(path, TINY, seed=7)
    m = load_model(path)
    with torch.no_grad():
        m.score_head.layers[1].bias.fill_(0.4)
    return m


def _videos():
    seqs = [generate_sequence(seed, FRAMES, size=(320, 240)) for seed in (1, 2)]
    seqs.append(generate_sequence(3, FRAMES, size=(160, 200), object_size=(0.06, 0.06)))
    seqs.append(generate_sequence(4, FRAMES, size=(200, 150), object_size=(0.5, 0.45)))  # crops reach edges
    boxes = [[float(round(v)) for v in s.boxes[0]] for s in seqs]
    return [s.frames for s in seqs], boxes


def test_batched_engine_matches_single_trackers(model):
    videos, boxes = _videos()
    trackers = [Tracker(model, precision="fp32", update_interval=4) for _ in videos]
    for tracker, frames, box in zip(trackers, videos, boxes):
        tracker.initialize(frames[0], box)
    engine = TrackingEngine(model, precision="fp32", params={"update_interval": 4})
    states = engine.initialize([v[0] for v in videos], boxes)
    for t in range(1, FRAMES):
        pairs = engine.step(states, [v[t] for v in videos])
        states = [s for s, _ in pairs]
        for i, (tracker, (_, result)) in enumerate(zip(trackers, pairs)):
            box, score = tracker.track(videos[i][t])
            np.testing.assert_allclose(result.box_xywh, box, atol=1e-3, err_msg=f"track {i} frame {t}")
            assert abs(result.score - score) < 1e-4 and result.updated
    assert all(isinstance(s, MixFormerState) and s.online_updates == (FRAMES - 1) // 4 for s in states)


def test_tracker_gives_the_authors_boxes(model):
    videos, boxes = _videos()
    for frames, box in zip(videos, boxes):
        ours = Tracker(model, precision="fp32", search_factor=4.4, update_interval=3)
        ours.initialize(frames[0], box)
        ref = AuthorsTracker(model, TrackerParams(search_factor=4.4, update_interval=3))
        ref.initialize(frames[0], box)
        for t in range(1, FRAMES):
            theirs = ref.track(frames[t])
            xywh, score = ours.track(frames[t])
            np.testing.assert_allclose(xywh, theirs["target_bbox"], atol=1e-3, err_msg=f"frame {t}")
            assert abs(score - theirs["conf_score"]) < 1e-5
        assert ours.state.online_updates == sum(e == "replace" for _, e in ref.events)


def test_state_record_resumes_with_identical_boxes(model):
    """What the service stores in Redis: no cache, no pickle; another engine rebuilds the cache."""
    videos, boxes = _videos()
    frames = videos[0]
    a = Tracker(model, precision="fp32", update_interval=3)
    a.initialize(frames[0], boxes[0])
    for t in range(1, 5):
        a.track(frames[t])
    arrays, meta = state_to_record(a.state)
    assert meta["family"] == "mixformerv2" and "cache" not in arrays
    dtypes = {"template": np.uint8, "online_template": np.uint8, "candidate": np.uint8, "box_xywh": np.float64}
    assert all(v.dtype == dtypes[k] for k, v in arrays.items())
    size = sum(v.nbytes for v in arrays.values())
    assert size <= 3 * TINY.template_size**2 * 3 + 32
    restored = state_from_record({k: v.copy() for k, v in arrays.items()}, dict(meta))
    assert restored.cache is None and restored.box_xywh == a.state.box_xywh
    b = Tracker(load_model_copy(model), precision="fp32", update_interval=3)  # another "replica"
    b.state = restored
    for t in range(5, FRAMES):
        box_a, score_a = a.track(frames[t])
        box_b, score_b = b.track(frames[t])
        assert np.array_equal(box_a, box_b) and score_a == score_b, t
    assert b.state.online_updates == a.state.online_updates >= 2


def load_model_copy(model: MixFormerV2) -> MixFormerV2:
    clone = build_model(TINY)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_bad_records_are_refused(model):
    frames, boxes = _videos()
    t = Tracker(model, precision="fp32")
    t.initialize(frames[0][0], boxes[0])
    arrays, meta = state_to_record(t.state)
    with pytest.raises(ValueError, match="template"):
        state_from_record({**arrays, "template": arrays["template"][..., :2]}, meta)
    with pytest.raises(ValueError, match="layout"):
        state_from_record(arrays, {**meta, "layout": 99})
    with pytest.raises(ValueError, match="metadata"):
        state_from_record(arrays, {**meta, "params": {"bogus": 1}})


def test_bf16_engine_keeps_the_heads_in_float32(model):
    frames, boxes = _videos()
    engine = TrackingEngine(model, precision="bf16")
    assert engine.model.box_head.layers[1][0].weight.dtype == torch.float32
    assert engine.model.backbone.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.backbone.blocks[0].attn.qkv.weight.dtype == torch.float32  # the caller's model untouched
    states = engine.initialize([frames[0][0]], [boxes[0]])
    fp32 = Tracker(model, precision="fp32")
    fp32.initialize(frames[0][0], boxes[0])
    ((state, result),) = engine.step(states, [frames[0][1]])
    box, _ = fp32.track(frames[0][1])
    assert state.cache.kv.dtype == torch.bfloat16
    assert np.abs(result.box_xywh - box).max() < 8.0  # bf16 rounding moves boxes a little, not wildly


def test_tracker_parameters_belong_to_a_family(model):
    tracker = Tracker(model, precision="fp32", update_interval=25, search_factor=4.55)
    assert tracker.engine.family.params == TrackerParams(search_factor=4.55, update_interval=25)
    with pytest.raises(ValueError, match="update_interval"):
        Tracker(build_model("tiny"), update_interval=25)  # LoRAT has no online template
    with pytest.raises(ValueError, match="window_weight"):
        Tracker(model, window_weight=0.4)
    defaults = Tracker(build_model("MixFormerV2-tiny")).engine.family.params
    assert (defaults.search_factor, defaults.update_interval) == (5.0, 200)
