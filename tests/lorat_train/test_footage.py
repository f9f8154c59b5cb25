"""Footage as it comes: mixed layouts are read, and `--check-data` names every bad sequence, file and line."""

from __future__ import annotations

import numpy as np
import pytest

from lorat_infer import LoRATConfig
from lorat_train.cli import main
from lorat_train.config import DataOptions, JitterOptions, SourceOptions
from lorat_train.data import PairSampler
from lorat_train.footage import DataError, Report, read_path

from .footage_data import SIZE, write_bad_footage, write_mixed_footage

CFG = LoRATConfig(name="t", embed_dim=32, depth=1, num_heads=2, patch_size=16, template_size=32, search_size=64)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, write_bad_footage(root)


def test_check_data_names_every_bad_case(bad, capsys):
    root, expect = bad
    assert main(["--check-data", str(root)]) == 1
    out = capsys.readouterr().out
    for case, fragment in expect.items():
        assert fragment in out, f"{case}: {fragment!r} not in\n{out}"
    assert out.strip().splitlines()[-1].startswith("UNUSABLE")


def test_training_refuses_unusable_data_with_the_report(bad, tmp_path):
    root, expect = bad
    data = DataOptions(sources=[SourceOptions(type="auto", root=str(root))])
    with pytest.raises(DataError) as info:
        PairSampler(CFG, data, seed=0, cache_dir=tmp_path / "cache")
    assert expect["far"] in str(info.value) and expect["xyxy"] in str(info.value)


def test_mixed_folder_is_read_and_checks_clean(tmp_path, capsys):
    root = write_mixed_footage(tmp_path / "footage")
    assert main(["--check-data", str(root)]) == 0
    assert "OK: 4 sequences" in capsys.readouterr().out
    report = Report()
    seqs = {s.name: s for s in read_path(root, report, cache_dir=tmp_path / "cache")}
    assert not report.problems, report.format()
    assert set(seqs) == {"cat-1", "cam1", "instances-10", "instances-11"}
    cam = seqs["cam1"]
    assert len(cam) == 8 and np.isnan(cam.boxes[3]).all()  # the empty line: target absent
    frame = cam.frame(5)
    assert frame.shape == (SIZE[1], SIZE[0], 3) and frame.dtype == np.uint8
    assert len(seqs["instances-10"]) == 1


def test_pairs_from_every_kind_keep_the_target_in_the_search_crop(tmp_path):
    root = write_mixed_footage(tmp_path / "footage")
    for kind, path in (("lasot", root / "lasot"), ("video", root / "cams"), ("coco", root / "coco" / "instances.json")):
        data = DataOptions(sources=[SourceOptions(type=kind, root=str(path))])
        sampler = PairSampler(CFG, data, seed=1, cache_dir=tmp_path / "cache")
        batch = sampler.batch(0, 6)
        boxes = batch.target_boxes.numpy() * CFG.search_size
        size = boxes[:, 2:] - boxes[:, :2]
        # the authors' jitter retries until the (clipped) target keeps min_object_size px inside the crop
        assert (size >= 10 - 1e-6).all() and (boxes >= 0).all() and (boxes <= CFG.search_size).all(), kind
        assert batch.template_mask.sum(dim=(1, 2)).min() > 0, kind


def test_authors_jitter_is_anisotropic_and_translates_by_half_the_box_sides():
    data = DataOptions(search_jitter=JitterOptions(scale=0.25, center=3.0))
    sampler = PairSampler(CFG, DataOptions(sources=[SourceOptions(pool_size=1, num_frames=2)]), seed=0)
    sampler.data = data
    rng = np.random.default_rng(0)
    box = np.array([40.0, 30.0, 60.0, 50.0])
    draws = [sampler._search_transform(rng, box) for _ in range(300)]
    scales = np.array([d[0] for d in draws if d is not None])
    assert np.abs(np.log(scales[:, 0] / scales[:, 1])).max() > 0.1  # x and y scales differ
    base = 64 / np.sqrt((20 + 30) * (20 + 30))
    assert np.log(scales / base).std() == pytest.approx(0.25, abs=0.05)


def test_check_data_of_a_config_checks_its_training_and_held_out_sources(bad, tmp_path, capsys):
    import yaml

    root, expect = bad
    good = write_mixed_footage(tmp_path / "good")
    path = tmp_path / "train.yaml"
    coco = {"type": "coco", "root": str(root / "coco" / "instances.json")}
    path.write_text(yaml.safe_dump({"data": {"sources": [{"type": "auto", "root": str(good)}]},
                                    "val": {"sources": [coco]}}))
    assert main(["--config", str(path), "--check-data"]) == 1
    out = capsys.readouterr().out
    assert expect["coco-outside"] in out and str(good) not in out


def test_trackingnet_chunks_and_split_files(tmp_path):
    from PIL import Image

    from lorat_infer.eval.datasets import write_boxes
    from lorat_infer.eval.synthetic import generate_sequence

    chunk = tmp_path / "TrackingNet" / "TRAIN_0"
    for name, seed in (("seqA", 1), ("seqB", 2)):
        seq = generate_sequence(seed, 12, size=SIZE)
        (chunk / "frames" / name).mkdir(parents=True)
        for i, frame in enumerate(seq.frames):  # 0.jpg .. 11.jpg: numeric, not lexical, order
            Image.fromarray(frame).save(chunk / "frames" / name / f"{i}.png")
        (chunk / "anno").mkdir(exist_ok=True)
        write_boxes(chunk / "anno" / f"{name}.txt", seq.boxes)
    report = Report()
    seqs = read_path(tmp_path / "TrackingNet", report, kind="trackingnet")
    assert not report.problems and [s.name for s in seqs] == ["seqA", "seqB"]
    assert [p.name for p in seqs[0].frame_paths[:3]] == ["0.png", "1.png", "2.png"] and len(seqs[0]) == 12
    split = tmp_path / "split.txt"
    split.write_text("seqB\n")
    data = DataOptions(sources=[SourceOptions(type="trackingnet", root=str(tmp_path / "TrackingNet"),
                                              split_file=str(split))])
    sampler = PairSampler(CFG, data, seed=0)
    assert [s.name for s in sampler.sources[0].sequences] == ["seqB"]
