"""A deadline on the SIGTERM path: a shutdown that hangs dumps every stack and exits.

Why: each step of the drain has its own timeout, yet a server once sat 30 s after SIGTERM without logging
the next step, and nothing showed where. An orchestrator would SIGKILL it after its grace period and the
cause would be lost. This timer, a thread so that it fires even when the event loop is blocked, writes
the threads' stacks (faulthandler) and, if the loop still turns, every asyncio task's stack to stderr, logs
`stop_watchdog`, and exits with status 70 (EX_SOFTWARE): a hang becomes a short failure with its cause.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading

from .log import event

EXIT_STATUS = 70


def _await_chain(task: asyncio.Task) -> list[str]:
    """Where a suspended task waits: its coroutine and each coroutine it awaits, outermost first
    (`Task.print_stack` shows the outermost frame only)."""
    lines, coro, depth = [], task.get_coro(), 0
    while coro is not None and depth < 32:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth += 1
    return lines


def _dump_tasks(loop: asyncio.AbstractEventLoop, done: threading.Event) -> None:
    try:
        for task in asyncio.all_tasks(loop):
            print(f"task {task.get_name()}:", *_await_chain(task), sep="\n", file=sys.stderr)
    finally:
        done.set()


def arm(loop: asyncio.AbstractEventLoop, after_s: float) -> threading.Timer:
    """Start the timer; `cancel()` it once the shutdown is over."""

    def fire() -> None:
        event("stop_watchdog", 40, after_s=after_s,
              note="the shutdown did not finish in time; stacks follow on stderr; exiting")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(_dump_tasks, loop, done)
            done.wait(2.0)
        except RuntimeError:  # the loop is closed already
            pass
        sys.stderr.flush()
        os._exit(EXIT_STATUS)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.start()
    return timer
