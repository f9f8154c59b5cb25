"""Crop geometry: forward/inverse mapping, pixel-aligned resampling, padding, mask rasterisation, window."""

import numpy as np
import torch

from lorat_infer import TrackingEngine, build_model
from lorat_infer.crop import (
    CropTransform,
    crop_frame,
    damp_size,
    enforce_min_size,
    rasterize,
    siamfc_transform,
    template_foreground_mask,
)


def test_siamfc_scale_follows_the_context_formula():
    box = np.array([[100.0, 50.0, 140.0, 80.0]])  # w = 40, h = 30
    t = siamfc_transform(box, area_factor=4.0, output_size=224)
    p = (4.0 - 1) * (40 + 30) / 2
    s = np.sqrt(224 * 224 / ((40 + p) * (30 + p)))
    np.testing.assert_allclose(t.scale, [[s, s]])
    # The box centre lands on the crop centre.
    np.testing.assert_allclose(t.apply(box)[0, :2] + t.apply(box)[0, 2:], [224.0, 224.0])


def test_inverse_mapping_returns_the_original_box():
    frame = torch.randint(0, 255, (240, 320, 3), dtype=torch.uint8)
    boxes = np.array([[100.0, 50.0, 140.0, 80.0], [-20.0, 200.0, 30.0, 260.0], [5.5, 7.25, 60.125, 33.0]])
    nominal = siamfc_transform(boxes, 4.0, 112)
    for i, box in enumerate(boxes):
        _, s, t = crop_frame(frame, nominal.scale[i], nominal.translation[i], 112, torch.zeros(3))
        realised = CropTransform(s[None], t[None])
        np.testing.assert_allclose(realised.invert(realised.apply(box[None]))[0], box, atol=1e-9)
        # Rasterising moves the realised transform only slightly away from the nominal one.
        np.testing.assert_allclose(s, nominal.scale[i], rtol=0.05)


def test_resampling_is_pixel_aligned_with_the_realised_transform():
    # A horizontal ramp: pixel column x holds value x, so a crop pixel's value is the frame x-coordinate its
    # centre maps back to (minus half a pixel, the pixel-centre convention).
    w, h = 200, 120
    frame = torch.from_numpy(np.tile(np.arange(w, dtype=np.uint8), (h, 1))[..., None].repeat(3, axis=2))
    box = np.array([[80.0, 40.0, 120.0, 70.0]])
    nominal = siamfc_transform(box, 2.0, 56)
    crop, s, t = crop_frame(frame, nominal.scale[0], nominal.translation[0], 56, torch.zeros(3))
    u = np.arange(5, 50)  # interior columns (away from interpolation clamping at region edges)
    expected = (u + 0.5 - t[0]) / s[0] - 0.5
    np.testing.assert_allclose(crop[0, 28, u].numpy(), expected, atol=1e-3)


def test_outside_of_the_frame_is_padded_with_the_given_colour():
    frame = torch.full((100, 100, 3), 200, dtype=torch.uint8)
    box = np.array([[0.0, 0.0, 20.0, 20.0]])  # near the corner: the crop extends past the frame
    nominal = siamfc_transform(box, 4.0, 112)
    pad = torch.tensor([10.0, 20.0, 30.0])
    crop, _, _ = crop_frame(frame, nominal.scale[0], nominal.translation[0], 112, pad)
    np.testing.assert_allclose(crop[:, 0, 0].numpy(), [10.0, 20.0, 30.0])
    np.testing.assert_allclose(crop[:, -1, -1].numpy(), [200.0, 200.0, 200.0])


def test_crop_entirely_outside_the_frame_is_all_padding():
    frame = torch.full((50, 50, 3), 255, dtype=torch.uint8)
    nominal = siamfc_transform(np.array([[1000.0, 1000.0, 1010.0, 1010.0]]), 2.0, 56)
    crop, s, _ = crop_frame(frame, nominal.scale[0], nominal.translation[0], 56, torch.zeros(3))
    assert crop.abs().max() == 0
    np.testing.assert_allclose(s, nominal.scale[0])


def test_rasterize_is_end_exclusive():
    np.testing.assert_array_equal(rasterize(np.array([1.2, 2.0, 3.0, 4.0002])), [1, 2, 3, 5])
    # An overshoot below the 1e-4 tolerance does not add a pixel.
    np.testing.assert_array_equal(rasterize(np.array([0.0, 0.0, 4.00005, 4.0])), [0, 0, 4, 4])
    np.testing.assert_array_equal(rasterize(np.array([1.9, 2.5, 3.5, 4.7])), [1, 2, 4, 5])


def test_template_mask_rasterisation():
    # 56 px template, 4x4 grid, stride 14.
    mask = template_foreground_mask(np.array([[14.0, 14.0, 42.0, 42.5]]), 14.0, (4, 4))[0]
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[1:4, 1:3] = 1  # x: cells 1..2 (42/14 = 3 exactly is exclusive), y: 42.5/14 reaches cell 3
    assert torch.equal(mask, expected)
    # Boxes past the crop are clipped to the grid.
    mask = template_foreground_mask(np.array([[-30.0, 50.0, 100.0, 200.0]]), 14.0, (4, 4))[0]
    assert mask[3].sum() == 4 and mask[:3].sum() == 0


def test_min_size_floor_keeps_the_centre():
    out = enforce_min_size(np.array([[10.0, 10.0, 14.0, 40.0]]), 10.0)
    np.testing.assert_allclose(out, [[7.0, 10.0, 17.0, 40.0]])


def test_size_damping_moves_the_size_geometrically_and_keeps_the_predicted_centre():
    previous = np.array([[100.0, 100.0, 140.0, 180.0]])  # 40 x 80
    predicted = np.array([[210.0, 50.0, 290.0, 210.0]])  # 80 x 160 centred at (250, 130)
    np.testing.assert_allclose(damp_size(previous, predicted, 1.0), predicted)
    np.testing.assert_allclose(damp_size(previous, predicted, 0.0), [[230.0, 90.0, 270.0, 170.0]])
    half = damp_size(previous, predicted, 0.5)  # sizes grow by sqrt(2), not by the arithmetic mean's 1.5
    np.testing.assert_allclose(half[0, 2:] - half[0, :2], [40 * 2**0.5, 80 * 2**0.5])
    np.testing.assert_allclose((half[0, :2] + half[0, 2:]) / 2, [250.0, 130.0])


def test_hann_window_edges_are_zero_and_centre_is_max():
    engine = TrackingEngine(build_model("tiny"))
    hx, wx = engine.config.search_grid
    window = engine.family.window.view(hx, wx)
    assert window[0].abs().max() == 0 and window[-1].abs().max() == 0
    assert window[:, 0].abs().max() == 0 and window[:, -1].abs().max() == 0
    torch.testing.assert_close(window, window.flip(0).flip(1))
    assert window.max() == window[hx // 2 - 1 : hx // 2 + 1, wx // 2 - 1 : wx // 2 + 1].max()
