"""Fast checks of the pure parts: settings precedence, token layout, overload policies, raw decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import TrackState
from server.decode import DecodeError, FrameLimits, FrameTooLarge, decode_image, decode_raw
from server.settings import load_settings
from server.state.codec import TokenFormatError, decode_tokens, encode_tokens
from server.tracks import Options, PendingFrame, Track


def test_settings_flags_override_env_override_defaults() -> None:
    s = load_settings([], env={})
    assert (s.grpc_port, s.metrics_port, s.redis_url, s.default_policy) == (50051, 50052, "", "latest")
    s = load_settings(["--max-batch-size", "4"], env={"LORAT_MAX_BATCH_SIZE": "8", "LORAT_GRPC_PORT": "7000",
                                                      "LORAT_PUBLISH_STREAMS": "false"})
    assert (s.max_batch_size, s.grpc_port, s.publish_streams) == (4, 7000, False)
    with pytest.raises(ValueError, match="default_policy"):
        load_settings(["--default-policy", "random"], env={})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tokens_round_trip_exactly(dtype: torch.dtype) -> None:
    tokens = torch.randn(16, 64).to(dtype)
    blob = encode_tokens(tokens, "tiny@abc")
    assert blob[:4] == b"LRTT"
    back, model_id = decode_tokens(blob)
    assert model_id == "tiny@abc" and back.dtype == dtype and torch.equal(back, tokens)
    with pytest.raises(TokenFormatError):
        decode_tokens(blob[:-2])
    with pytest.raises(TokenFormatError):
        decode_tokens(b"\x80\x04pickle" + blob)


def _track(policy: str, max_queue: int = 2, max_age: float = 1.0) -> Track:
    state = TrackState(template_tokens=torch.zeros(1, 1), box_xyxy=np.zeros(4), pad_color=np.zeros(3, np.float32))
    return Track(track_id="t", state=state, model_id="m", options=Options(policy, max_age, max_queue))


def _frame(n: int, enqueued: float = 0.0) -> PendingFrame:
    return PendingFrame(rgb=np.zeros((2, 2, 3), np.uint8), frame_number=n, pts=n, capture_time=None,
                        receive_time=0.0, enqueued=enqueued)


def test_latest_policy_keeps_only_the_newest() -> None:
    t = _track("latest")
    assert t.offer(_frame(1)) == []
    dropped = t.offer(_frame(2))
    assert [(f.frame_number, r) for f, r in dropped] == [(1, "superseded")]
    frame, old = t.take(now=0.0)
    assert frame.frame_number == 2 and old == []


def test_fifo_policy_bounds_queue_and_age() -> None:
    t = _track("fifo", max_queue=2, max_age=0.5)
    t.offer(_frame(1, enqueued=0.0))
    t.offer(_frame(2, enqueued=0.0))
    dropped = t.offer(_frame(3, enqueued=1.0))
    assert [(f.frame_number, r) for f, r in dropped] == [(1, "queue_full")]
    frame, old = t.take(now=1.2)  # frame 2 waited 1.2 s > 0.5 s
    assert frame.frame_number == 3 and [(f.frame_number, r) for f, r in old] == [(2, "too_old")]


def test_every_frame_policy_never_drops_and_applies_backpressure() -> None:
    t = _track("every_frame", max_queue=2)
    assert t.offer(_frame(1)) == [] and t.has_room()
    assert t.offer(_frame(2)) == [] and not t.has_room()
    t.take(now=0.0)
    assert t.has_room()


def test_raw_decoding_with_stride_and_bgr() -> None:
    limits = FrameLimits(100, 100)
    rgb = np.random.default_rng(0).integers(0, 255, (5, 4, 3), dtype=np.uint8)
    padded = np.zeros((5, 16), np.uint8)
    padded[:, :12] = rgb[:, :, ::-1].reshape(5, 12)
    raw = pb.RawImage(format=pb.RawImage.BGR24, width=4, height=5, stride=16, data=padded.tobytes())
    assert np.array_equal(decode_raw(raw, limits), rgb)
    with pytest.raises(DecodeError, match="bytes"):
        decode_raw(pb.RawImage(format=pb.RawImage.RGB24, width=4, height=5, data=b"\0" * 10), limits)
    with pytest.raises(FrameTooLarge):
        decode_raw(pb.RawImage(format=pb.RawImage.RGB24, width=400, height=5, data=b""), limits)
    with pytest.raises(DecodeError):
        decode_image(b"not an image", limits)
