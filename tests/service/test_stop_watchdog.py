"""The SIGTERM deadline (server/stop_watchdog.py): a shutdown stuck in a coroutine, or with the event loop
blocked, ends with status 70 and the stacks that show where it was stuck."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from .conftest import ROOT

STUCK = {
    "coroutine": "await asyncio.Event().wait()  # a step that never finishes",
    "blocked loop": "time.sleep(60)  # a synchronous call on the loop",
}


def _run(body: str) -> tuple[int, str, float]:
    code = textwrap.dedent(f"""
        import asyncio, time
        from server import stop_watchdog

        async def stuck_shutdown_step():
            {body}

        async def main():
            stop_watchdog.arm(asyncio.get_running_loop(), 0.5)
            await stuck_shutdown_step()

        asyncio.run(main())
        """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr, time.monotonic() - t0


def test_a_stuck_coroutine_is_named_and_the_process_exits() -> None:
    code, stderr, _ = _run(STUCK["coroutine"])
    assert code == 70, stderr[-2000:]
    assert "event=stop_watchdog" in stderr
    assert "stuck_shutdown_step" in stderr  # the task's stack names the step that hung


def test_a_blocked_event_loop_still_ends_with_the_thread_stacks() -> None:
    code, stderr, elapsed = _run(STUCK["blocked loop"])
    assert code == 70, stderr[-2000:]
    assert "Current thread" in stderr or "Thread 0x" in stderr  # faulthandler's dump
    assert "stuck_shutdown_step" in stderr
    assert elapsed < 50  # it did not wait for the 60 s sleep
