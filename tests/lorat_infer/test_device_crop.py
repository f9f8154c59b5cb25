"""Both batched crop paths from uint8 frames (the CUDA one: gather + tensor resample; the CPU one: the
compiled `native_crop` pass) equal the reference per-track crop (`crop_frame` + `normalize`)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lorat_infer import native_crop
from lorat_infer.crop import crop_frame, normalize, siamfc_transform
from lorat_infer.device_crop import gather_grid, gather_on_device, mean_colors, plan_crops, resample

PATHS = ["tensor", "native"]


def _reference(frame, nominal, i, size, pad):
    crop, s, t = crop_frame(torch.from_numpy(frame), nominal.scale[i], nominal.translation[i], size,
                            torch.from_numpy(pad))
    return normalize(crop[None])[0], s, t


def _batched(frames, nominal, size, pads, path="tensor", pool=None):
    sizes = np.array([[f.shape[1], f.shape[0]] for f in frames], dtype=np.float64)
    plan = plan_crops(sizes, nominal, size, pads)
    if path == "native":
        out = np.full((len(frames), 3, size, size), np.nan, dtype=np.float32)
        native_crop.crop_tracks(frames, plan, out, pool, 3 if pool else 1)
        return torch.from_numpy(out), plan.realised
    grid = np.empty((len(frames), 3, 2 * size, 2 * size), dtype=np.uint8)
    gather_grid(frames, plan, grid)
    crops = resample(torch.from_numpy(grid), torch.from_numpy(plan.params), size, torch.float32)
    return crops, plan.realised


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", [56, 112])
def test_batched_crops_equal_the_reference_crops(size, path):
    rng = np.random.default_rng(0)
    frames, boxes = [], []
    shapes = [(240, 320), (1080, 1920), (60, 50), (480, 640), (240, 320), (100, 100), (300, 200), (240, 320)]
    raw_boxes = [
        [100.0, 50.0, 140.0, 80.0],  # downsampled interior
        [900.0, 500.0, 1300.0, 900.0],  # big region of a big frame
        [10.0, 10.0, 14.0, 13.0],  # tiny box: the region is upsampled
        [-30.0, -20.0, 40.0, 30.0],  # past the top-left corner: padding
        [300.0, 200.0, 330.0, 250.0],  # past the bottom-right corner
        [1000.0, 1000.0, 1010.0, 1010.0],  # entirely outside: all padding
        [0.0, 0.0, 200.0, 300.0],  # the whole frame
        [5.5, 7.25, 60.125, 33.0],  # fractional
    ]
    for (h, w), box in zip(shapes, raw_boxes):
        frames.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        boxes.append(box)
    boxes = np.array(boxes)
    pads = rng.uniform(0, 255, size=(len(frames), 3)).astype(np.float32)
    nominal = siamfc_transform(boxes, 4.0, size)
    with ThreadPoolExecutor(3) as pool:
        crops, realised = _batched(frames, nominal, size, pads, path, pool if path == "native" else None)
    assert crops.shape == (len(frames), 3, size, size) and crops.dtype == torch.float32
    for i, frame in enumerate(frames):
        expected, s, t = _reference(frame, nominal, i, size, pads[i])
        # 3e-4 of the normalised range is ~0.02 grey levels: the same taps and weights, float32 rounding apart
        torch.testing.assert_close(crops[i], expected, atol=3e-4, rtol=0, msg=f"crop {i}")
        np.testing.assert_array_equal(realised.scale[i], s)
        np.testing.assert_array_equal(realised.translation[i], t)


def test_the_native_crop_is_the_tensor_crop_to_float32_rounding():
    """Same terms in the same float32 order: the two paths differ by at most a rounding or two."""
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in [(1080, 1920), (97, 61), (480, 640)]]
    boxes = np.array([[700.0, 300.0, 1100.0, 650.0], [-5.0, 30.0, 40.0, 90.0], [600.0, 10.0, 700.0, 90.0]])
    pads = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
    nominal = siamfc_transform(boxes, 4.0, 112)
    tensor, _ = _batched(frames, nominal, 112, pads, "tensor")
    native, _ = _batched(frames, nominal, 112, pads, "native")
    torch.testing.assert_close(native, tensor, atol=2e-6, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_a_non_contiguous_frame_is_cropped_like_a_contiguous_one(path):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    view = np.ascontiguousarray(frame[:, ::-1])[:, ::-1]  # same pixels, negative strides
    nominal = siamfc_transform(np.array([[50.0, 40.0, 120.0, 90.0]] * 2), 4.0, 56)
    pads = np.zeros((2, 3), dtype=np.float32)
    crops, _ = _batched([frame, view], nominal, 56, pads, path)
    torch.testing.assert_close(crops[0], crops[1])


def test_bf16_output_is_the_rounded_fp32_crop():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    nominal = siamfc_transform(np.array([[40.0, 30.0, 90.0, 80.0]]), 4.0, 56)
    plan = plan_crops(np.array([[160.0, 120.0]]), nominal, 56, np.zeros((1, 3), np.float32))
    grid = np.empty((1, 3, 112, 112), dtype=np.uint8)
    gather_grid([frame], plan, grid)
    params = torch.from_numpy(plan.params)
    fp32 = resample(torch.from_numpy(grid), params, 56, torch.float32)
    bf16 = resample(torch.from_numpy(grid), params, 56, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16, fp32.to(torch.bfloat16))


def test_the_device_gather_equals_the_host_gather():
    """GPU-decoded frames are gathered on the device with the same taps (checked here with a CPU tensor)."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(90, 130, 3), dtype=np.uint8)
    nominal = siamfc_transform(np.array([[-10.0, 20.0, 60.0, 70.0]]), 4.0, 56)
    plan = plan_crops(np.array([[130.0, 90.0]]), nominal, 56, np.zeros((1, 3), np.float32))
    host = np.empty((1, 3, 112, 112), dtype=np.uint8)
    gather_grid([frame], plan, host)
    device = gather_on_device(torch.from_numpy(frame), plan.rows[0], plan.cols[0])
    np.testing.assert_array_equal(device.numpy(), host[0])


def test_mean_colours_are_exact():
    frame = np.zeros((3, 2, 3), dtype=np.uint8)
    frame[0, 0] = [255, 1, 7]
    np.testing.assert_allclose(mean_colors([frame])[0], [255 / 6, 1 / 6, 7 / 6], rtol=1e-7)


def test_the_native_kernel_refuses_taps_outside_the_frame():
    """It reads without bounds checks, so a plan that does not fit its frame (e.g. planned for a bigger
    frame) is refused before the kernel could read foreign memory."""
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    nominal = siamfc_transform(np.array([[200.0, 120.0, 280.0, 190.0]]), 4.0, 56)
    plan = plan_crops(np.array([[300.0, 200.0]]), nominal, 56, np.zeros((1, 3), np.float32))
    out = np.empty((1, 3, 56, 56), np.float32)
    native_crop.crop_tracks([big], plan, out)  # fits
    with pytest.raises(ValueError, match="outside the 150x100 frame"):
        native_crop.crop_tracks([big[:100, :150]], plan, out)
