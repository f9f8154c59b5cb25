"""lorat-track, lorat-export and the demo, end to end on a tiny synthetic video."""

import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from lorat_infer import build_model, load_model, save_merged
from lorat_infer.cli import export, track
from lorat_infer.cli.demo import write_demo_video
from lorat_infer.cli.video import GT_COLOR, PRED_COLOR, FrameSource, draw_box
from lorat_infer.eval.datasets import read_boxes, write_sequence_folder
from lorat_infer.eval.synthetic import generate_sequence

from .official_format import write_dinov2_backbone, write_release_adapter

FRAMES = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_merged(build_model("tiny"), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_demo_video(tmp_path_factory.mktemp("video"), seed=5, frames=FRAMES, size=(160, 120))


def _decode(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_track_writes_results_render_and_metrics(checkpoint, video, tmp_path):
    mp4, gt = video
    results, render = tmp_path / "out" / "boxes.txt", tmp_path / "out" / "tracked.mp4"
    # A real process, as a user runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "lorat_infer.cli.track", str(mp4), "--box", ",".join(map(str, read_boxes(gt)[0])),
         "--checkpoint", str(checkpoint), "--output", str(results), "--render", str(render), "--eval", str(gt),
         "--device", "cpu", "--precision", "fp32"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AUC (SUC)" in proc.stdout and "| demo | 8/8 |" in proc.stdout
    assert "100%" in proc.stderr  # the progress bar ran to the end
    boxes = read_boxes(results)
    assert boxes.shape == (FRAMES, 4)
    np.testing.assert_allclose(boxes[0], read_boxes(gt)[0], atol=1e-3)
    frames = _decode(render)
    assert len(frames) == FRAMES and frames[0].shape == (120, 160, 3)


def test_track_matches_the_library(checkpoint, video, tmp_path):
    """The CLI's boxes are the Tracker's boxes on the decoded frames (in-process run, image folder input)."""
    mp4, _ = video
    frames = list(FrameSource(mp4))
    seq = generate_sequence(5, num_frames=FRAMES, size=(160, 120))
    seq.frames = frames
    folder = write_sequence_folder(seq, tmp_path / "seq", image_format="png")
    out = tmp_path / "boxes.txt"
    # No --box: the folder's groundtruth.txt gives the first box.
    assert track.main([str(folder), "--checkpoint", str(checkpoint), "--output", str(out), "--no-progress",
                       "--device", "cpu", "--precision", "fp32", "--max-frames", "5"]) == 0
    from lorat_infer import Tracker

    tracker = Tracker(load_model(checkpoint), device="cpu", precision="fp32")
    tracker.initialize(frames[0], seq.boxes[0])
    expected = [tracker.track(f)[0] for f in frames[1:5]]
    np.testing.assert_allclose(read_boxes(out)[1:], np.stack(expected), atol=1e-3)


@pytest.mark.parametrize(("args", "message"), [
    (["--box", "1,2,3"], "4 values"),
    (["--box", "a,b,c,d"], "x,y,w,h numbers"),
    (["--box", "500,500,10,10"], "does not overlap"),
    (["--box", "1,2,3,4", "--variant", "tiny"], "all of --variant"),
])
def test_track_bad_input_is_a_clear_error(checkpoint, video, args, message, capsys):
    mp4, _ = video
    extra = [] if "--variant" in args else ["--checkpoint", str(checkpoint)]
    assert track.main([str(mp4), "--no-progress", *extra, *args]) == 2
    assert message in capsys.readouterr().err


def test_track_missing_source(tmp_path, capsys):
    assert track.main([str(tmp_path / "nope.mp4"), "--box", "1,2,3,4"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert track.main([str(tmp_path / "junk.mp4"), "--box", "1,2,3,4"]) == 2
    assert "cannot open as video" in capsys.readouterr().err


def test_draw_box_draws_the_box_and_the_ground_truth():
    frame = np.full((60, 80, 3), 128, np.uint8)
    out = draw_box(frame, np.array([10, 12, 30, 20]), 0.87, gt_xywh=np.array([40, 30, 20, 20]), frame_index=3)
    assert out.shape == frame.shape and frame[12, 20].tolist() == [128, 128, 128]  # input untouched
    assert out[22, 10].tolist() == list(PRED_COLOR)  # left edge of the prediction
    assert out[40, 40].tolist() == list(GT_COLOR)  # left edge of the ground truth
    assert out[22, 25].tolist() == [128, 128, 128]  # inside stays clear


def test_export_merges_the_authors_files(tmp_path, capsys):
    cfg = build_model("tiny").config
    backbone, adapter, out = tmp_path / "dinov2.pth", tmp_path / "lorat.bin", tmp_path / "merged.safetensors"
    write_dinov2_backbone(backbone, cfg)
    write_release_adapter(adapter, cfg)
    assert export.main(["--variant", "tiny", "--backbone", str(backbone), "--adapter", str(adapter),
                        "--output", str(out)]) == 0
    assert "tiny" in capsys.readouterr().out
    reference, merged = load_model("tiny", backbone, adapter), load_model(out)
    template = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(1, 3, cfg.search_size, cfg.search_size)
    mask = torch.zeros(1, *cfg.template_grid)
    with torch.no_grad():
        torch.testing.assert_close(merged(template, search, mask)["boxes"], reference(template, search, mask)["boxes"])
    # bf16 storage loads back too, and a missing file is a clear error
    assert export.main(["--variant", "tiny", "--backbone", str(backbone), "--adapter", str(adapter),
                        "--output", str(tmp_path / "bf16.safetensors"), "--dtype", "bf16"]) == 0
    assert load_model(tmp_path / "bf16.safetensors").config == cfg
    assert export.main(["--variant", "tiny", "--backbone", str(tmp_path / "x.pth"), "--adapter", str(adapter),
                        "--output", str(out)]) == 2
