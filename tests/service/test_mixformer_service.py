"""Two families in one server (`--model mf=PATH`): StartTrack names a model, results carry its id and the
confidence, and a MixFormerV2 track resumed from Redis on another server process gives the boxes of an
uninterrupted run, bit for bit; online-template replacements show in the metrics."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import Tracker, load_model
from lorat_infer.mixformer import get_config
from tests.lorat_infer.mixformer_release import write_authors_checkpoint

from .conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value, push_frame, xywh

UPDATE_INTERVAL = 3
FRAMES = 10


@pytest.fixture(scope="module")
def mixformer_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Random weights in the authors' layout (pickled settings beside them); scores around 0.6."""
    path = tmp_path_factory.mktemp("mf") / "mixformerv2_tiny.pth.tar"
    write_authors_checkpoint(path, get_config("MixFormerV2-tiny"), seed=7,
                             overrides={"score_head.layers.1.bias": torch.tensor([0.4])})
    return path


def _reference(path, frames, box0):  # type: ignore[no-untyped-def]
    """One uninterrupted Tracker (fp32, one thread like the servers): boxes, scores, updates per frame."""
    torch.set_num_threads(1)
    tracker = Tracker(load_model(path), device="cpu", precision="fp32", update_interval=UPDATE_INTERVAL)
    tracker.initialize(frames[0], box0)
    boxes, scores, updates = [], [], []
    for frame in frames[1:]:
        box, score = tracker.track(frame)
        boxes.append(box)
        scores.append(score)
        updates.append(tracker.state.online_updates)
    return np.array(boxes), scores, updates



def test_mixformer_track_resumes_on_another_server(redis_proc, checkpoint, mixformer_file, tmp_path):  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(21, FRAMES)
    box0 = [float(round(v)) for v in boxes[0]]
    expected, scores, updates = _reference(mixformer_file, frames, box0)
    assert updates[-1] >= 2  # the rule fires on both servers below

    spec = f"mf={mixformer_file},update_interval={UPDATE_INTERVAL}"
    args = dict(lease_ttl_s=1.0, precision="fp32", model=spec)
    a = ServerProc(redis_proc.url, checkpoint, tmp_path / "a.log", **args).start()
    try:
        mf = a.stub.StartTrack(pb.StartTrackRequest(track_id="mf", model="mf", first_frame=frame_pb(frames[0]),
                                                    initial_box=box_pb(box0)))
        lo = a.stub.StartTrack(pb.StartTrackRequest(track_id="lo", first_frame=frame_pb(frames[0]),
                                                    initial_box=box_pb(box0)))
        mf_id, lorat_id = mf.first_result.model_id, lo.first_result.model_id
        assert mf_id.startswith("mf@") and lorat_id.startswith("tiny@")
        with pytest.raises(grpc.RpcError) as err:
            a.stub.StartTrack(pb.StartTrackRequest(track_id="x", model="nope", first_frame=frame_pb(frames[0]),
                                                   initial_box=box_pb(box0)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mf@" in err.value.details()
        got = []
        for f in frames[1:5]:
            got.append(push_frame(a, "mf", f))
            assert push_frame(a, "lo", f).model_id == lorat_id
        assert all(r.model_id == mf_id for r in got)
        np.testing.assert_allclose([r.confidence for r in got], scores[:4], atol=1e-6)
        text = a.metrics_text()
        assert metric_value(text, "lorat_online_template_updates_total", f'model="{mf_id}"') == updates[3]
        assert metric_value(text, "lorat_online_template_updates_total", f'model="{lorat_id}"') == 0
    finally:
        a.kill()  # SIGKILL: what is in Redis is what was written per frame

    # What a MixFormerV2 track keeps in Redis: the template crops (uint8), not the template cache.
    fields = redis_proc.client().hgetall("lorat:track:{mf}")
    stored = len(fields.get(b"template") or b"") + len(fields[b"state"])
    crop_bytes = get_config("MixFormerV2-tiny").template_size ** 2 * 3
    assert 2 * crop_bytes < stored < 3 * crop_bytes + 4096

    b = ServerProc(redis_proc.url, checkpoint, tmp_path / "b.log", **args).start()
    try:
        got.append(push_frame(b, "mf", frames[5], retry_s=5.0))  # waits out a's lease, then resumes
        got += [push_frame(b, "mf", f) for f in frames[6:]]
        assert [r.frame_number for r in got] == list(range(1, FRAMES))
        assert [r.status for r in got] == [pb.TRACKING] * (FRAMES - 1)
        assert "event=track_resumed track_id=mf" in (tmp_path / "b.log").read_text()
        np.testing.assert_array_equal([xywh(r.box) for r in got], expected)  # identical, not just close
        text = b.metrics_text()
        assert metric_value(text, "lorat_online_template_updates_total", f'model="{mf_id}"') == (
            updates[-1] - updates[3])
    finally:
        b.kill()


def test_model_flags_parse_and_refuse_clearly() -> None:
    from server.models import parse_model_spec, parse_model_specs
    from server.settings import load_settings

    spec = parse_model_spec("mf=/models/mixformerv2_small.pth.tar,update_interval=25,search_factor=4.55")
    assert (spec.name, str(spec.path), spec.params) == (
        "mf", "/models/mixformerv2_small.pth.tar", {"update_interval": 25, "search_factor": 4.55})
    s = load_settings(["--model", "a=/x.pth.tar", "--model", "b=/y.safetensors"], env={})
    assert s.model == ("a=/x.pth.tar", "b=/y.safetensors")
    assert load_settings([], env={"LORAT_MODEL": "a=/x;b=/y"}).model == ("a=/x", "b=/y")
    for bad, why in (("mf", "NAME=PATH"), ("m@f=/x", "name"), ("mf=/x,oops", "key=value")):
        with pytest.raises(ValueError, match=why):
            parse_model_spec(bad)
    with pytest.raises(ValueError, match="unique"):
        parse_model_specs(["a=/x", "a=/y"])
    with pytest.raises(ValueError, match="unique"):
        load_settings(["--model", "a=/x", "--model", "a=/y"], env={})
