"""MixFormerV2's tracking pipeline against a line-by-line transcription of the authors' tracker
(MixFormerOnline.track with the full forward, sample_target with cv2.copyMakeBorder), and the online
template rule frame by frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.mixformer import MixFormerV2, TrackerParams, get_config
from lorat_infer.mixformer.crop import crop_geometry, sample_target, to_input
from lorat_infer.mixformer.pipeline import advance, forward_batch, initial_states, search_crops

from .mixformer_authors import AuthorsTracker, authors_sample_target
from .mixformer_release import random_state_dict

TINY = get_config("MixFormerV2-tiny")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> MixFormerV2:
    m = MixFormerV2(TINY)
    state = random_state_dict(TINY, seed=5)
    state["score_head.layers.1.bias"] = torch.tensor([0.4])  # scores around 0.6: candidates happen
    m.load_state_dict(state)
    return m.eval()


def test_crop_geometry_rounds_half_to_even_and_ceils_the_side():
    # side = ceil(sqrt(10 * 10) * 2.05) = ceil(20.5) = 21; centre 15 - 10.5 = 4.5 -> round() gives 4, not 5
    assert crop_geometry([10.0, 10.0, 10.0, 10.0], 2.05) == (4, 4, 21)
    # 5.5 -> 6 (even), 4.5 -> 4 (even)
    assert crop_geometry([11.0, 10.0, 10.0, 10.0], 2.05)[0] == 6


@pytest.mark.parametrize("box", [
    [40.0, 30.0, 20.0, 24.0],  # inside
    [0.0, 0.0, 30.5, 17.25],  # top-left corner: padding left and top
    [150.0, 100.0, 50.0, 50.0],  # reaches the right and bottom edges: the authors' extra black pixel
    [185.3, 2.7, 14.7, 40.1],  # right edge, fractional
    [-20.0, 120.0, 60.0, 45.0],  # partly outside
])
@pytest.mark.parametrize("factor, size", [(2.0, 32), (5.0, 64), (4.4, 64)])
def test_sample_target_is_the_authors(box, factor, size):
    frame = np.random.default_rng(0).integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    ours, f_ours = sample_target(frame, box, factor, size)
    theirs, f_theirs = authors_sample_target(frame, box, factor, size)
    assert f_ours == f_theirs
    np.testing.assert_array_equal(ours, theirs)


def test_the_last_column_turns_black_when_a_crop_reaches_it():
    frame = np.full((40, 40, 3), 200, dtype=np.uint8)
    x1, _, side = crop_geometry([20.0, 10.0, 20.0, 20.0], 1.0)
    assert x1 + side == 40  # the crop ends exactly at the image's right edge
    crop, factor = sample_target(frame, [20.0, 10.0, 20.0, 20.0], 1.0, 20)
    assert factor == 1.0 and (crop[:, -1] == 0).all() and (crop[:, :-1] == 200).all()


def _run_pipeline(model, frames, box, params):
    (state,) = initial_states(model, [frames[0]], [box], [params], CPU, torch.float32)
    boxes, scores, events = [], [], []
    for t, frame in enumerate(frames[1:], start=1):
        crops, factors = search_crops([state], [frame], model.config.search_size)
        pred, logits = forward_batch(model, [state], crops, CPU, torch.float32)
        ((state, out),) = advance(model, [state], [frame], pred, logits, factors, CPU, torch.float32)
        boxes.append(out.box_xywh)
        scores.append(out.score)
        events += [(t, "candidate")] * out.candidate_taken + [(t, "replace")] * out.template_replaced
    return boxes, scores, events, state


def test_pipeline_with_the_cache_gives_the_authors_boxes(model):
    seq = generate_sequence(11, 14, size=(200, 150))
    params = TrackerParams(search_factor=4.4, update_interval=4)
    box = [float(v) for v in seq.boxes[0]]
    ref = AuthorsTracker(model, params)
    ref.initialize(seq.frames[0], box)
    ref_out = [ref.track(f) for f in seq.frames[1:]]
    boxes, scores, events, state = _run_pipeline(model, seq.frames, box, params)
    for t, (ours, theirs) in enumerate(zip(boxes, ref_out), start=1):
        np.testing.assert_allclose(ours, theirs["target_bbox"], atol=1e-3, err_msg=f"frame {t}")
        assert abs(scores[t - 1] - theirs["conf_score"]) < 1e-5
    assert events == ref.events
    assert ("replace" in {e for _, e in events}) and ("candidate" in {e for _, e in events})
    assert state.online_updates == 3 and state.frame_index == 13


def test_online_template_rule_frame_by_frame(model):
    """Scores are injected: a candidate when score > 0.5 and above the running max; every 4th frame it
    replaces the online template (cache recomputed), the max resets to -1 and the candidate to the template."""
    seq = generate_sequence(12, 10, size=(200, 150))
    params = TrackerParams(search_factor=4.4, update_interval=4)
    box = [float(v) for v in seq.boxes[0]]
    (state,) = initial_states(model, [seq.frames[0]], [box], [params], CPU, torch.float32)
    template = state.template
    scores = {1: 0.4, 2: 0.7, 3: 0.6, 4: 0.8, 5: 0.55, 6: 0.9, 7: 0.3, 8: 0.2, 9: 0.51}
    want_candidate = {2, 4, 5, 6, 9}
    candidate_crops = {}
    for t in range(1, 10):
        frame = seq.frames[t]
        _, factors = search_crops([state], [frame], TINY.search_size)
        pred = torch.tensor([[0.5, 0.5, 0.3, 0.25]])
        logit = torch.logit(torch.tensor([scores[t]], dtype=torch.float64)).float()
        ((state, out),) = advance(model, [state], [frame], pred, logit, factors, CPU, torch.float32)
        assert out.candidate_taken == (t in want_candidate), t
        assert out.template_replaced == (t % 4 == 0), t
        if out.candidate_taken:
            candidate_crops[t] = sample_target(frame, out.box_xywh, 2.0, TINY.template_size)[0]
        if t == 3:  # the best so far (frame 2) is waiting; the online template is still the first template
            np.testing.assert_array_equal(state.candidate, candidate_crops[2])
            np.testing.assert_array_equal(state.online_template, template)
            assert state.max_score == pytest.approx(0.7)
        if t in (4, 8):
            expected = candidate_crops[4 if t == 4 else 6]
            np.testing.assert_array_equal(state.online_template, expected)
            assert state.candidate is None and state.max_score == -1.0
            with torch.inference_mode():
                fresh = model.template_cache(to_input(template), to_input(expected))
            torch.testing.assert_close(state.cache.kv, fresh.kv, rtol=0, atol=0)
    assert state.online_updates == 2
    np.testing.assert_array_equal(state.candidate, candidate_crops[9])


def test_a_replacement_without_candidate_restores_the_first_template(model):
    seq = generate_sequence(13, 4, size=(200, 150))
    params = TrackerParams(update_interval=2)
    (state,) = initial_states(model, [seq.frames[0]], [[60.0, 50.0, 40.0, 30.0]], [params], CPU, torch.float32)
    for t in (1, 2):
        _, factors = search_crops([state], [seq.frames[t]], TINY.search_size)
        ((state, out),) = advance(model, [state], [seq.frames[t]], torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
                                  torch.tensor([-3.0]), factors, CPU, torch.float32)
    assert out.template_replaced and not out.candidate_taken
    np.testing.assert_array_equal(state.online_template, state.template)
