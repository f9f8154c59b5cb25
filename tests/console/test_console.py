"""The web console in headless Chromium: it loads cleanly, lists a gRPC track at its next refresh, draws
the server's boxes on the live view (and they follow the synthetic object), starts a track from a drawn
box on a video's first frame, and stops a track. Screenshots go to $LORAT_TEST_ARTIFACTS (default
/tmp/lorat-console-artifacts)."""

from __future__ import annotations

import threading
import time

import numpy as np
from lorat.v1 import tracker_pb2 as pb

from .conftest import iou, raw, start_grpc_track, synthetic


def _row(track_id: str) -> str:
    return f'tr[data-track-id="{track_id}"]'


def test_page_loads_without_console_errors(page, artifacts) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("window.lorat && window.lorat.polls >= 2")  # the list refreshed twice
    assert page.locator("#model").inner_text().startswith("model lorat-default@")
    page.screenshot(path=str(artifacts / "console-empty.png"))
    assert page.problems == []


def test_grpc_track_is_listed_and_its_live_view_follows_the_object(page, console, artifacts) -> None:  # type: ignore[no-untyped-def]
    frames, truth = synthetic(23)
    page.wait_for_function("window.lorat.polls >= 1")
    start_grpc_track(console.stub, "grpc-cam", frames[0], truth[0])
    polls_after_start = page.evaluate("window.lorat.polls")
    page.wait_for_selector(_row("grpc-cam"))
    # The list refreshes every 0.5 s, one request at a time: the track must show at the latest in the
    # second refresh completed after StartTrack returned (the first may have been asked before it). Counting
    # refreshes, not seconds, keeps this true on a loaded machine.
    assert page.evaluate("window.lorat.polls") - polls_after_start <= 2

    page.click(_row("grpc-cam"))
    page.wait_for_function("window.lorat.ws && window.lorat.ws.readyState === 1")
    results: dict[int, pb.TrackResult] = {}

    def push() -> None:
        for f in frames[1:]:
            r = console.stub.PushFrame(pb.PushFrameRequest(track_id="grpc-cam", frame=raw(f)), timeout=60)
            results[r.frame_number] = r
            time.sleep(0.05)

    pusher = threading.Thread(target=push)
    pusher.start()
    page.wait_for_function("window.lorat.drawn.length >= 15", timeout=120_000)
    pusher.join(180)
    time.sleep(0.5)  # let the last frames arrive
    page.screenshot(path=str(artifacts / "console-live-view.png"))
    drawn = page.evaluate("window.lorat.drawn")
    assert len(drawn) >= 15
    ious = []
    for d in drawn:
        r = results[d["frame_number"]]
        # the page draws exactly the server's box for that frame ...
        np.testing.assert_allclose(d["box"], [r.box.x, r.box.y, r.box.width, r.box.height], atol=1e-3)
        ious.append(iou(np.array(d["box"]), truth[d["frame_number"]]))
    # ... and those boxes follow the object (the default model scores mean IoU ~0.75 on this sequence)
    assert np.mean(ious) > 0.5, ious
    # Pixels: the canvas really shows the box stroke where the last box is.
    x, y, w, _ = drawn[-1]["rect"]
    pixel = page.evaluate(f"Array.from(document.getElementById('live').getContext('2d')"
                          f".getImageData({x + w / 2:.0f}, {y:.0f}, 1, 1).data)")
    assert pixel[1] > 200 and pixel[0] < 80 and pixel[2] < 80, pixel  # the box colour, #00ff00
    page.wait_for_function("window.lorat.history.length >= 10")  # the confidence plot has data
    assert page.problems == []


def test_start_by_drawing_a_box_then_stop(page, console, media, artifacts) -> None:  # type: ignore[no-untyped-def]
    _, truth = media
    page.click("#new-track")
    page.wait_for_function("document.getElementById('file-select').options.length > 0 "
                           "&& document.getElementById('file-select').value === 'synthetic.mp4'")
    page.click("#load-frame")
    page.wait_for_function("window.lorat.first !== null")
    canvas = page.locator("#first-frame").bounding_box()
    assert canvas is not None
    k = canvas["width"] / 320  # page pixels per frame pixel
    x, y, w, h = truth[0]
    page.mouse.move(canvas["x"] + x * k, canvas["y"] + y * k)
    page.mouse.down()
    page.mouse.move(canvas["x"] + (x + w) * k, canvas["y"] + (y + h) * k, steps=6)
    page.mouse.up()
    box = page.evaluate("window.lorat.box")
    np.testing.assert_allclose(box, truth[0], atol=2.0)  # the box drawn, in frame pixels
    page.screenshot(path=str(artifacts / "console-start-dialog.png"))

    page.click("#start-go")
    page.wait_for_selector("#start-dialog", state="hidden")
    row = page.wait_for_selector('tr:has(td.source:text-is("synthetic.mp4"))')
    track_id = row.get_attribute("data-track-id")
    assert track_id
    page.wait_for_function("window.lorat.drawn.length >= 10", timeout=120_000)
    drawn = page.evaluate("window.lorat.drawn")
    assert np.mean([iou(np.array(d["box"]), truth[d["frame_number"]]) for d in drawn]) > 0.5
    page.screenshot(path=str(artifacts / "console-file-track.png"))

    page.click(f'{_row(track_id)} button.stop')
    page.wait_for_selector(_row(track_id), state="detached")
    assert console.stub.GetTrack(pb.GetTrackRequest(track_id=track_id)).status == pb.STOPPED
    page.wait_for_function("window.lorat.polls >= 1")
    assert page.locator(_row(track_id)).count() == 0
    assert page.problems == []


def test_start_an_rtsp_track_from_the_browser(page, console) -> None:  # type: ignore[no-untyped-def]
    """The RTSP path of the dialog: a real GStreamer RTSP server, a preview frame, a drawn box, a live view."""
    from tests.rtsp.conftest import GstRtspServer, free_port

    cam = GstRtspServer(free_port())
    cam.start()
    try:
        page.click("#new-track")
        page.fill("#rtsp-url", cam.url)
        page.check('input[value="rtsp"]')
        page.click("#load-frame")
        page.wait_for_function("window.lorat.first !== null", timeout=60_000)
        canvas = page.locator("#first-frame").bounding_box()
        assert canvas is not None
        page.mouse.move(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + canvas["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.6, canvas["y"] + canvas["height"] * 0.6, steps=4)
        page.mouse.up()
        page.click("#start-go")
        page.wait_for_selector("#start-dialog", state="hidden", timeout=60_000)
        row = page.wait_for_selector(f'tr:has(td.source:text-is("{cam.url}"))')
        track_id = row.get_attribute("data-track-id")
        page.wait_for_function("window.lorat.drawn.length >= 5", timeout=60_000)
        assert page.evaluate("window.lorat.drawn[0].status") in ("TRACKING", "LOST")
        page.click(f'{_row(track_id)} button.stop')
        page.wait_for_selector(_row(track_id), state="detached")
        assert page.problems == []
    finally:
        cam.kill()
