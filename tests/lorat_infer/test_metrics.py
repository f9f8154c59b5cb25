"""OPE metrics against hand-computed cases."""

import numpy as np
import pytest

from lorat_infer.eval.metrics import (
    NORM_PRECISION_THRESHOLDS,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    aggregate,
    center_error,
    evaluate_sequence,
    format_table,
    iou,
)


def test_iou_of_known_boxes():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [3, 4, 2, 2]], dtype=float)
    gt = np.array([[5, 0, 10, 10], [0, 0, 20, 20], [10, 0, 10, 10], [3, 4, 2, 2]], dtype=float)
    # half overlap: 50 / 150; nested: 100 / 400; touching edges (x2 = x + w): 0; identical: 1
    np.testing.assert_allclose(iou(pred, gt), [1 / 3, 0.25, 0.0, 1.0])


def test_iou_is_zero_for_degenerate_boxes():
    assert iou(np.array([[0, 0, 0, 10]]), np.array([[0, 0, 10, 10]]))[0] == 0.0


def test_centre_error_plain_and_normalised():
    gt = np.array([[0, 0, 100, 50]], dtype=float)
    pred = gt + np.array([[30, 40, 0, 0]])
    assert center_error(pred, gt)[0] == pytest.approx(50.0)
    assert center_error(pred, gt, normalized=True)[0] == pytest.approx(np.hypot(0.3, 0.8))


def test_perfect_tracking():
    gt = np.array([[10, 20, 30, 40]] * 5, dtype=float)
    m = evaluate_sequence(gt.copy(), gt)
    # IoU = 1 exceeds every threshold except t = 1 itself (strict >, as OTB/LaSOT/GOT-10k toolkits).
    np.testing.assert_array_equal(m.success_curve, np.r_[np.ones(20), 0.0])
    assert m.auc == pytest.approx(20 / 21)
    assert m.precision == 1.0 and m.norm_precision == 1.0
    np.testing.assert_array_equal(m.precision_curve, np.ones_like(PRECISION_THRESHOLDS))
    assert m.mean_iou == 1.0


def test_success_curve_and_precision_of_a_known_sequence():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    pred = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [25, 0, 10, 10]], dtype=float)  # IoU 1, 1/3, 0
    m = evaluate_sequence(pred, gt)
    expected = np.array([int(t < 1) + int(t < 1 / 3) + int(t < 0) for t in SUCCESS_THRESHOLDS]) / 3
    np.testing.assert_allclose(m.success_curve, expected)
    assert m.auc == pytest.approx(expected.mean())
    # centre errors 0, 5, 25 px
    np.testing.assert_allclose(m.center_errors, [0, 5, 25])
    assert m.precision == pytest.approx(2 / 3)
    assert m.precision_curve[PRECISION_THRESHOLDS.tolist().index(25)] == 1.0
    # normalised by w = h = 10: 0, 0.5, 2.5 -> only the first is within 0.2
    assert m.norm_precision == pytest.approx(1 / 3)
    assert m.norm_precision_curve[-1] == pytest.approx(2 / 3)  # 0.5 <= 0.5
    assert len(NORM_PRECISION_THRESHOLDS) == len(m.norm_precision_curve) == 51


def test_frames_with_absent_or_invalid_ground_truth_are_skipped():
    gt = np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 0, 0], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [50, 50, 5, 5], [50, 50, 5, 5], [50, 50, 5, 5], [0, 0, 10, 10]], dtype=float)
    absent = np.array([False, False, False, True, False])
    m = evaluate_sequence(pred, gt, absent)
    assert m.num_evaluated == 2 and m.num_frames == 5
    assert np.isnan(m.ious[1:4]).all()
    assert m.auc == pytest.approx(20 / 21)  # both evaluated frames are perfect
    # Without the flag, frame 3 counts as a miss.
    assert evaluate_sequence(pred, gt).success_curve[0] == pytest.approx(2 / 3)


def test_invalid_prediction_repeats_the_previous_one():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    pred = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [np.nan, 0, -1, 0]], dtype=float)
    m = evaluate_sequence(pred, gt)
    np.testing.assert_allclose(m.ious, [1, 1 / 3, 1 / 3])


def test_aggregate_weighs_sequences_equally():
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    perfect = evaluate_sequence(gt.copy(), gt, name="a")
    lost = evaluate_sequence(gt[:2] + np.array([100, 100, 0, 0]), gt[:2], name="b")  # 2 frames, IoU 0
    total = aggregate([perfect, lost])
    assert total.auc == pytest.approx((20 / 21 + 0.0) / 2)
    assert total.precision == pytest.approx(0.5)
    table = format_table([perfect, lost], total)
    assert "| a | 4/4 | 95.2 |" in table and "all (2)" in table


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="3 predicted boxes but 2"):
        evaluate_sequence(np.zeros((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="no sequence"):
        aggregate([evaluate_sequence(np.ones((1, 4)), np.full((1, 4), np.nan))])
