"""Fast checks of the pure parts: settings precedence, token layout, overload policies, raw decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import TrackState
from server.decode import DecodeError, FrameLimits, FrameTooLarge, decode_image, decode_raw
from server.settings import load_settings
from server.state.record import RecordFormatError, decode_record, encode_record, to_torch
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
def test_record_round_trips_named_arrays_exactly(dtype: torch.dtype) -> None:
    tokens = torch.randn(16, 64).to(dtype)
    box = np.array([1.5, 2.0, 30.25, 40.0])
    blob = encode_record({"template_tokens": tokens, "box_xyxy": box}, {"family": "lorat", "n": 3})
    assert blob[:4] == b"LRTR"
    arrays, meta = decode_record(blob)
    assert meta["family"] == "lorat" and meta["n"] == 3
    back = to_torch(arrays, meta, "template_tokens")
    assert back.dtype == dtype and torch.equal(back, tokens)
    np.testing.assert_array_equal(arrays["box_xyxy"], box)
    for bad in (blob[:-2], b"\x80\x04pickle" + blob, blob + b"x"):
        with pytest.raises(RecordFormatError):
            decode_record(bad)


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


def test_raw_frame_with_a_huge_stride_is_not_padded_to_stride_times_height() -> None:
    """width 160, height 1, stride 2**32-1: one 480-byte row; nothing near 4 GiB may be allocated."""
    raw = pb.RawImage(format=pb.RawImage.RGB24, width=160, height=1, stride=2**32 - 1, data=b"\1" * 510)
    out = decode_raw(raw, FrameLimits(4096, 4096))
    assert out.shape == (1, 160, 3) and out.nbytes == 480


def test_source_policy_refuses_other_schemes_hostless_urls_and_unknown_options() -> None:
    from server.urlpolicy import SourceRefused, check_source, protocol_whitelist

    assert check_source("rtsp://cam.local:554/s", {"rtsp_transport": "udp"}) == {"rtsp_transport": "udp"}
    for url in ("file:///etc/hostname", "http://cam/x", "rtsp://", "rtsp:///path", "RTSP", "rtsp://a b/"):
        with pytest.raises(SourceRefused):
            check_source(url, {})
    for opts in ({"protocol_whitelist": "file,rtsp"}, {"rtsp_transport": "file"}, {"rtsp_flags": "listen"}):
        with pytest.raises(SourceRefused):
            check_source("rtsp://cam/x", opts)
    assert check_source("http://cam/x", {}, schemes=("rtsp", "http")) == {}
    assert "file" not in protocol_whitelist("rtsp://cam/x")


def test_redaction_removes_passwords_tokens_and_userinfo() -> None:
    from server.urlpolicy import redact, redact_url

    text = ("Server returned 401 for rtsp://admin:hunter2@cam:554/s?token=abc123&x=1 "
            "redis://:s3cret@redis:6379/0 password=pa55")
    out = redact(text)
    for secret in ("hunter2", "abc123", "s3cret", "pa55"):
        assert secret not in out
    assert "cam:554/s" in out and "x=1" in out
    assert redact_url("rtsp://u:p@cam/s") == "rtsp://cam/s"


def test_request_checks() -> None:
    from server import errors
    from server.limits import check_capture_time, check_id, check_labels, options
    from server.settings import Settings

    s = Settings()
    assert check_id("abc") == "abc"
    for bad in ("abc\n", "", "a" * 129, "a/b"):
        with pytest.raises(errors.ServiceError, match="track_id"):
            check_id(bad)
    for opts in (pb.TrackOptions(max_frame_age_seconds=float("nan")), pb.TrackOptions(max_frame_age_seconds=1e300),
                 pb.TrackOptions(max_queue=2**32 - 1), pb.TrackOptions(overload_policy=99)):
        with pytest.raises(errors.ServiceError) as info:
            options(opts, s)
        assert info.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(errors.ServiceError, match="labels"):
        check_labels({str(i): "x" for i in range(s.max_labels + 1)}, s)
    with pytest.raises(errors.ServiceError, match="characters"):
        check_labels({"k": "x" * (s.max_label_bytes + 1)}, s)
    frame = pb.Frame()
    frame.capture_time.seconds = 2**62
    with pytest.raises(errors.ServiceError, match="capture_time"):
        check_capture_time(frame)


def test_token_file_reloads_and_compares_every_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from server.security import TokenFile

    path = tmp_path / "tokens"
    path.write_text("# comment\nalpha\n\nbeta\n")
    tokens = TokenFile(str(path), check_every_s=0.0)
    assert tokens.valid(b"alpha") and tokens.valid(b"beta") and not tokens.valid(b"gamma")
    path.write_text("gamma\n")
    os.utime(path, ns=(1, 10**18))  # a new mtime, whatever the file system's resolution
    assert tokens.valid(b"gamma") and not tokens.valid(b"alpha")
    with pytest.raises(ValueError):
        TokenFile(str(tmp_path / "missing"))
