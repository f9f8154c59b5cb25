"""The evaluation runner: batched sequences give the same boxes as one at a time."""

import numpy as np
import pytest
import torch

from lorat_infer import TrackingEngine, build_model
from lorat_infer.eval.datasets import read_sequence, write_sequence_folder
from lorat_infer.eval.runner import print_results, run_sequences
from lorat_infer.eval.synthetic import generate_sequence


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def sequences():
    return [generate_sequence(s, num_frames=n, size=(96, 72)) for s, n in ((1, 6), (2, 4), (3, 5))]


def test_batched_run_equals_one_by_one(model, sequences):
    engine = TrackingEngine(model, device="cpu", precision="fp32")
    single = run_sequences(engine, sequences, batch_size=1)
    batched = run_sequences(engine, sequences, batch_size=2)  # slots refill as sequences end
    assert [r.name for r in batched] == [s.name for s in sequences]
    for a, b, seq in zip(single, batched, sequences):
        assert a.boxes.shape == (len(seq.frames), 4) and a.scores.shape == (len(seq.frames),)
        np.testing.assert_allclose(a.boxes[0], seq.boxes[0])  # OPE: frame 1 is the given box
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        assert a.metrics is not None and a.metrics.num_evaluated == len(seq.frames)
        assert a.metrics.auc == pytest.approx(b.metrics.auc, abs=1e-6)


def test_runs_from_a_folder_with_absent_frames_and_max_frames(model, sequences, tmp_path, capsys):
    folder = write_sequence_folder(sequences[0], tmp_path / "seq", absent=[0, 0, 1, 0, 0, 0])
    (run,) = run_sequences(model, [read_sequence(folder)], max_frames=4, device="cpu", precision="fp32")
    assert len(run.boxes) == 4
    assert run.metrics.num_evaluated == 3  # frame 3 is absent
    total = print_results([run])
    out = capsys.readouterr().out
    assert "| seq | 3/4 |" in out and "frames/s" in out
    assert total is not None and 0 <= total.auc <= 1


def test_bad_batch_size(model, sequences):
    with pytest.raises(ValueError, match="batch_size"):
        run_sequences(model, sequences, batch_size=0)
