"""LaSOT / GOT-10k folder readers, round-tripped through write_sequence_folder."""

import numpy as np
import pytest

from lorat_infer.eval.datasets import (
    DatasetError,
    read_boxes,
    read_dataset,
    read_got10k_sequence,
    read_lasot_sequence,
    read_sequence,
    write_sequence_folder,
)
from lorat_infer.eval.synthetic import generate_sequence


@pytest.fixture(scope="module")
def sequence():
    return generate_sequence(3, num_frames=5, size=(64, 48))


def test_lasot_round_trip_is_lossless_with_png(sequence, tmp_path):
    absent = [False, True, False, False, True]
    folder = write_sequence_folder(sequence, tmp_path / "cat-1", layout="lasot", absent=absent, image_format="png")
    assert (folder / "img" / "00000001.png").is_file()
    seq = read_lasot_sequence(folder)
    assert seq.name == "cat-1" and len(seq) == 5
    np.testing.assert_allclose(seq.boxes, sequence.boxes, atol=1e-4)
    np.testing.assert_array_equal(seq.absent, absent)
    for i, frame in enumerate(seq.frames()):
        assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        np.testing.assert_array_equal(frame, sequence.frames[i])


def test_got10k_round_trip_with_jpeg(sequence, tmp_path):
    folder = write_sequence_folder(sequence, tmp_path / "GOT-10k_Val_000001", layout="got10k",
                                   absent=[0, 0, 1, 0, 0])
    seq = read_sequence(folder)  # layout detected: no img/
    assert len(seq) == 5
    np.testing.assert_array_equal(seq.absent, [False, False, True, False, False])
    np.testing.assert_allclose(seq.boxes, sequence.boxes, atol=1e-4)
    # JPEG at quality 95: close, not equal
    assert np.abs(seq[2].astype(int) - sequence.frames[2]).mean() < 6


def test_read_dataset_finds_nested_sequences(sequence, tmp_path):
    write_sequence_folder(sequence, tmp_path / "cat" / "cat-1", image_format="png")
    write_sequence_folder(sequence, tmp_path / "dog" / "dog-2", image_format="png")
    assert [s.name for s in read_dataset(tmp_path)] == ["cat-1", "dog-2"]


def test_frame_and_box_counts_must_agree(sequence, tmp_path):
    folder = write_sequence_folder(sequence, tmp_path / "s", layout="got10k", image_format="png")
    (folder / "00000005.png").unlink()
    with pytest.raises(DatasetError, match="4 frames but 5 ground-truth boxes"):
        read_got10k_sequence(folder)


def test_bad_ground_truth_lines_are_named(tmp_path):
    path = tmp_path / "groundtruth.txt"
    path.write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"groundtruth.txt:2: expected 4 values"):
        read_boxes(path)
    path.write_text("1\t2\t3\t4\nNaN,NaN,NaN,NaN\n")
    boxes = read_boxes(path)
    assert boxes.shape == (2, 4) and np.isnan(boxes[1]).all()


def test_not_a_sequence_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"no groundtruth\.txt"):
        read_sequence(tmp_path)
    with pytest.raises(DatasetError, match="no sequence folders"):
        read_dataset(tmp_path)
