"""Tuned tracker parameters travel in the merged file and are what a loaded model tracks with."""

import numpy as np
import torch

from lorat_infer import TrackingEngine, build_model, load_model
from lorat_infer.checkpoint import save_merged
from lorat_infer.eval.synthetic import generate_sequence
from lorat_train.tune_window import write_params


def test_written_parameters_reload_and_drive_the_engine(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    path = tmp_path / "m.safetensors"
    save_merged(model, path)
    before = load_model(str(path))
    assert (before.config.window_weight, before.config.size_lr) == (model.config.window_weight, 1.0)
    write_params(str(path), window_weight=0.2, size_lr=0.5)
    after = load_model(str(path))
    assert (after.config.window_weight, after.config.size_lr) == (0.2, 0.5)
    for a, b in zip(before.state_dict().values(), after.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # weights untouched

    seq = generate_sequence(7, 6, size=(320, 240))
    loaded, explicit = TrackingEngine(after), TrackingEngine(before, params={"window_weight": 0.2, "size_lr": 0.5})
    assert loaded.family.params == explicit.family.params
    (s1,), (s2,) = loaded.initialize([seq.frames[0]], [seq.boxes[0]]), explicit.initialize([seq.frames[0]],
                                                                                            [seq.boxes[0]])
    for frame in seq.frames[1:]:
        ((s1, r1),), ((s2, r2),) = loaded.step([s1], [frame]), explicit.step([s2], [frame])
        np.testing.assert_allclose(r1.box_xyxy, r2.box_xyxy, atol=1e-6)
