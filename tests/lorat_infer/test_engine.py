"""The batched engine gives the single Tracker's boxes; bad input is refused clearly."""

import warnings

import numpy as np
import pytest
import torch

from lorat_infer import InvalidInput, Tracker, TrackingEngine, build_model
from lorat_infer.crop import CropTransform
from lorat_infer.engine import frame_results
from lorat_infer.eval.synthetic import generate_sequence

NUM_FRAMES = 12


def _exiting_object_frames(size=(200, 150)):
    """An object that moves right and leaves the frame after a few frames."""
    base = generate_sequence(5, NUM_FRAMES, size=size, occlusion=False, distractor=False)
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 255, size=(30, 24, 3), dtype=np.uint8)
    frames = []
    for t, frame in enumerate(base.frames):
        frame = frame.copy()
        x = 140 + 12 * t
        visible = max(0, min(24, size[0] - x))
        if visible:
            frame[60:90, x : x + visible] = patch[:, :visible]
        frames.append(frame)
    return frames, [140.0, 60.0, 24.0, 30.0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_batched_engine_matches_single_trackers(model):
    seqs = [generate_sequence(seed, NUM_FRAMES, size=(320, 240)) for seed in (1, 2)]
    seqs.append(generate_sequence(3, NUM_FRAMES, size=(160, 200), object_size=(0.06, 0.06)))
    exiting_frames, exiting_box = _exiting_object_frames()
    videos = [s.frames for s in seqs] + [exiting_frames]
    init_boxes = [s.boxes[0] for s in seqs] + [exiting_box]
    assert len({tuple(np.round(b[2:])) for b in init_boxes}) == 4  # four different sizes

    trackers = [Tracker(model) for _ in videos]
    for tracker, frames, box in zip(trackers, videos, init_boxes):
        tracker.initialize(frames[0], box)
    engine = TrackingEngine(model)
    states = engine.initialize([v[0] for v in videos], init_boxes)
    for t in range(1, NUM_FRAMES):
        pairs = engine.step(states, [v[t] for v in videos])
        states = [s for s, _ in pairs]
        for i, (tracker, (_, result)) in enumerate(zip(trackers, pairs)):
            box, score = tracker.track(videos[i][t])
            np.testing.assert_allclose(result.box_xywh, box, atol=1e-3, err_msg=f"track {i} frame {t}")
            assert abs(result.score - score) < 1e-4
            assert states[i].frame_index == t


def test_size_damping_is_what_callers_see_and_what_the_next_step_starts_from(model):
    seq = generate_sequence(4, NUM_FRAMES, size=(320, 240))
    plain, damped = TrackingEngine(model), TrackingEngine(model, params={"size_lr": 0.25})
    (p_state,), (d_state,) = plain.initialize([seq.frames[0]], [seq.boxes[0]]), damped.initialize(
        [seq.frames[0]], [seq.boxes[0]])
    first = seq.boxes[0]
    for t in range(1, NUM_FRAMES):
        ((p_state, p_result),) = plain.step([p_state], [seq.frames[t]])
        ((d_state, d_result),) = damped.step([d_state], [seq.frames[t]])
        np.testing.assert_array_equal(d_result.box_xyxy, d_state.box_xyxy)
        if t == 1:  # same start: the damped step is a quarter of the plain step's size change (log space)
            w, h = d_result.box_xyxy[2:] - d_result.box_xyxy[:2]
            pw, ph = p_result.box_xyxy[2:] - p_result.box_xyxy[:2]
            np.testing.assert_allclose([w, h], [first[2] * (pw / first[2]) ** 0.25, first[3] * (ph / first[3]) ** 0.25],
                                       rtol=1e-6)
            np.testing.assert_allclose(d_result.box_xyxy[:2] + d_result.box_xyxy[2:],
                                       p_result.box_xyxy[:2] + p_result.box_xyxy[2:], atol=1e-6)
    assert not np.allclose(p_state.box_xyxy, d_state.box_xyxy)


def test_engine_accepts_any_subset_of_tracks(model):
    seq = generate_sequence(7, 3)
    engine = TrackingEngine(model)
    a, b = engine.initialize([seq.frames[0]] * 2, [seq.boxes[0], seq.boxes[0] * [1, 1, 0.5, 0.5]])
    ((a1, _),) = engine.step([a], [seq.frames[1]])
    ((b1, _), (a2, _)) = engine.step([b, a1], [seq.frames[1], seq.frames[2]])
    assert (a2.frame_index, b1.frame_index) == (2, 1)
    torch.testing.assert_close(a2.template_tokens, a.template_tokens)


def test_unusable_prediction_keeps_the_previous_box(model):
    engine = TrackingEngine(model)
    seq = generate_sequence(8, 2)
    (state,) = engine.initialize([seq.frames[0]], [seq.boxes[0]])
    identity = CropTransform(np.ones((2, 2)), np.zeros((2, 2)))
    out = np.array([[50.0, 50.0, 40.0, 60.0, 0.9], [10.0, 10.0, 30.0, 40.0, 0.8]])  # first has x2 < x1
    result = frame_results(out, identity, np.array([[320, 240]] * 2), [state, state])
    assert result.updated.tolist() == [False, True]
    np.testing.assert_array_equal(result.boxes_xyxy[0], state.box_xyxy)
    np.testing.assert_array_equal(result.boxes_xyxy[1], [10.0, 10.0, 30.0, 40.0])
    np.testing.assert_array_equal(result.scores, [0.9, 0.8])


@pytest.mark.parametrize(
    "box, message",
    [
        ([10, 10, 0, 5], "positive"),
        ([10, 10, -3, 5], "positive"),
        ([float("nan"), 1, 2, 3], "finite"),
        ([1, 2, 3], "4 finite numbers"),
        ([500, 500, 10, 10], "does not overlap"),
        ([0, 0, 1e300, 1e300], "more than 4x"),
        ([-100, 0, 481, 50], "more than 4x"),
    ],
)
def test_bad_boxes_are_refused(model, box, message):
    frame = np.zeros((100, 120, 3), dtype=np.uint8)
    with pytest.raises(InvalidInput, match=message):
        TrackingEngine(model).initialize([frame], [box])


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    ],
)
def test_bad_frames_are_refused(model, frame, message):
    with pytest.raises(InvalidInput, match=message):
        TrackingEngine(model).initialize([frame], [[1, 1, 2, 2]])


def test_bf16_weights_stay_close_to_fp32_and_leave_the_callers_model_alone(model):
    seq = generate_sequence(9, 2)
    outputs = {}
    for precision in ("fp32", "bf16"):
        engine = TrackingEngine(model, precision=precision)
        (state,) = engine.initialize([seq.frames[0]], [seq.boxes[0]])
        _, result = engine.step_arrays([state], [seq.frames[1]])
        outputs[precision] = (engine, state, result)
    bf16_engine, bf16_state, bf16 = outputs["bf16"]
    assert bf16_engine.model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16  # cast once, not autocast
    assert bf16_state.template_tokens.dtype == torch.bfloat16
    assert bf16_engine.model.head.cell_centres.dtype == torch.float32  # buffers keep fp32
    assert model.blocks[0].attn.qkv.weight.dtype == torch.float32  # the caller's model is untouched
    fp32 = outputs["fp32"][2]
    assert np.abs(bf16.boxes_xyxy - fp32.boxes_xyxy).max() < 2.0
    assert not np.array_equal(bf16.boxes_xyxy, fp32.boxes_xyxy)  # really ran in bf16


def test_track_before_initialize_is_an_error(model):
    with pytest.raises(RuntimeError, match="initialize"):
        Tracker(model).track(np.zeros((10, 10, 3), dtype=np.uint8))


def test_read_only_frames_track_without_warnings(model):
    seq = generate_sequence(10, 3)
    frames = []
    for f in seq.frames:  # decoded frames are often read-only views of a byte buffer
        ro = np.frombuffer(f.tobytes(), dtype=np.uint8).reshape(f.shape)
        assert not ro.flags.writeable
        frames.append(ro)
    engine = TrackingEngine(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (state,) = engine.initialize([frames[0]], [seq.boxes[0]])
        engine.step([state], [frames[1]])


@pytest.mark.parametrize("box", [[1000.0, np.float64(1000.0), 10, 10], np.array([1e3, 1e3, 10.0, 10.0]),
                                 [np.nan, 1, 2, 3], [1, 2, 3]])
def test_refusals_show_plain_numbers(model, box):
    frame = np.zeros((100, 120, 3), dtype=np.uint8)
    with pytest.raises(InvalidInput) as err:
        TrackingEngine(model).initialize([frame], [box])
    message = str(err.value)
    assert "np." not in message and "float64" not in message and "array(" not in message, message


def test_padding_a_batch_to_its_bucket_changes_nothing(model):
    """CUDA graphs and compiled kernels pad a batch to its bucket (1, 2, 4, ...): the padded rows must not
    leak into the real ones. Checked on the CPU by forcing the padding."""
    seqs = [generate_sequence(seed, 3) for seed in (11, 12, 13)]
    plain = TrackingEngine(model, precision="fp32")
    padded = TrackingEngine(model, precision="fp32")
    padded.runner.bucket = lambda n: 8  # type: ignore[method-assign]
    results = []
    for engine in (plain, padded):
        states = engine.initialize([s.frames[0] for s in seqs], [s.boxes[0] for s in seqs])
        for t in (1, 2):
            states, arrays = engine.step_arrays(states, [s.frames[t] for s in seqs])
        results.append(arrays)
    np.testing.assert_allclose(results[0].boxes_xyxy, results[1].boxes_xyxy, atol=1e-4)
    np.testing.assert_allclose(results[0].scores, results[1].scores, atol=1e-5)


def test_step_arrays_and_step_agree_and_cuda_paths_stay_off_on_cpu(model):
    engine = TrackingEngine(model, precision="fp32")
    assert engine.max_in_flight == 1 and not engine.runner.graphs and not engine.runner.compiled
    seq = generate_sequence(14, 2)
    states = engine.initialize([seq.frames[0]] * 2, [seq.boxes[0]] * 2)
    new_states, arrays = engine.step_arrays(states, [seq.frames[1]] * 2)
    pairs = engine.step(states, [seq.frames[1]] * 2)
    assert arrays.boxes_xyxy.shape == (2, 4) and arrays.scores.shape == (2,) and arrays.updated.dtype == bool
    for i, (state, result) in enumerate(pairs):
        np.testing.assert_array_equal(result.box_xyxy, arrays.boxes_xyxy[i])
        np.testing.assert_array_equal(state.box_xyxy, new_states[i].box_xyxy)
        assert result.score == arrays.scores[i]


def test_torch_frames_on_the_cpu_track_like_numpy_frames(model):
    seq = generate_sequence(15, 2)
    engine = TrackingEngine(model, precision="fp32")
    results = []
    for convert in (lambda f: f, torch.from_numpy):
        (state,) = engine.initialize([convert(seq.frames[0])], [seq.boxes[0]])
        _, arrays = engine.step_arrays([state], [convert(seq.frames[1])])
        results.append(arrays.boxes_xyxy)
    np.testing.assert_array_equal(results[0], results[1])
    with pytest.raises(InvalidInput, match="uint8"):
        engine.initialize([torch.zeros(10, 10, 3)], [[1, 1, 2, 2]])
