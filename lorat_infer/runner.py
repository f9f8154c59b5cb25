"""Runs the per-frame device function of an engine: eager, `torch.compile`d, or replayed from CUDA graphs
captured per batch bucket; owns the staging buffers and the asynchronous readback.

On CUDA a batch is padded to its bucket (1, 2, 4, ..., 128) so that compiled kernels and graphs see a few
fixed shapes; host staging is pinned and copies do not block; results come back with one non-blocking copy
and an event. On CPU everything is plain and synchronous (the "device" is the host).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
WARMUP_ITERS = 3


class StepRunner:
    def __init__(self, fn: Callable[..., torch.Tensor], device: torch.device, compile: bool,
                 cuda_graphs: bool) -> None:
        self.fn = fn
        self.device = device
        self.cuda = device.type == "cuda"
        self.graphs = bool(cuda_graphs and self.cuda)
        self.compiled = bool(compile)
        self.device_lock = threading.RLock()  # device enqueue order, graph statics, CPU staging
        self._compiled_fn: Callable[..., torch.Tensor] | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self._pool = None
        self._cpu_local = threading.local()  # CPU buffers reused per thread (chunk workers run at once)
        if self.compiled:
            self._compiled_fn = self._compile(fn)

    # ----------------------------------------------------------------------------------- compile

    def _compile(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor] | None:
        try:
            import torch._dynamo as dynamo

            for knob in ("cache_size_limit", "recompile_limit"):
                if hasattr(dynamo.config, knob):
                    setattr(dynamo.config, knob, max(getattr(dynamo.config, knob), 4 * len(BUCKETS)))
            # CPU: inductor's freezing treats the (never changing) weights as constants and prepacks them for
            # oneDNN: the tiny model's compiled step at batch 32 ran 1.17-1.26x eager with it, 1.09x without
            # (single paired runs on the loaded 2-core machine).
            return torch.compile(fn, dynamic=False, options=None if self.cuda else {"freezing": True})
        except Exception as exc:  # compile is an optimisation: never a reason not to serve
            log.warning("torch.compile unavailable (%s); running eager", exc)
            self.compiled = False
            return None

    def _call(self, *args: torch.Tensor) -> torch.Tensor:
        if self._compiled_fn is not None:
            try:
                return self._compiled_fn(*args)
            except Exception as exc:
                log.warning("compiled step failed (%s: %s); running eager from now on", type(exc).__name__, exc)
                self._compiled_fn = None
                self.compiled = False
        return self.fn(*args)

    # ----------------------------------------------------------------------------------- shapes

    def bucket(self, n: int) -> int:
        """Rows the batch is padded to: the next bucket when compiled kernels or graphs want fixed shapes."""
        if not (self.graphs or self.compiled) or n > BUCKETS[-1]:
            return n
        return next(b for b in BUCKETS if b >= n)

    @property
    def _cpu_staging(self) -> dict[tuple, torch.Tensor]:
        """This thread's reused CPU buffers: the engine's chunk workers stage concurrently, each into its own."""
        buffers = getattr(self._cpu_local, "buffers", None)
        if buffers is None:
            buffers = self._cpu_local.buffers = {}
        return buffers

    def staging(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A host buffer to fill for the device: pinned on CUDA (the caching host allocator keeps it until
        its copy is done), on CPU a buffer reused by the calling thread (consume it before its next call)."""
        if self.cuda:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        key = (shape[1:], dtype)
        staging = self._cpu_staging
        buf = staging.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            buf = torch.empty((max(shape[0], 1), *shape[1:]), dtype=dtype)
            staging[key] = buf
        return buf[: shape[0]]

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.device, non_blocking=True) if self.cuda else host

    # ----------------------------------------------------------------------------------- run

    def run(self, n: int, rows: int, *args: torch.Tensor) -> torch.Tensor:
        """fn(*args) on `rows` rows; args after the first two may have only `n` rows (padded here)."""
        args = tuple(a if a.shape[0] == rows else _pad_rows(a, rows) for a in args)
        if self.graphs and rows in BUCKETS:
            try:
                return self._replay(args)
            except Exception as exc:
                log.warning("CUDA graph capture failed (%s: %s); running without graphs", type(exc).__name__, exc)
                self.graphs = False
                self._graphs.clear()
        return self._call(*args)

    def _replay(self, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(args)
            self._graphs[key] = entry
        graph, statics, output = entry
        for static, a in zip(statics, args):
            static.copy_(a, non_blocking=True)
        graph.replay()
        return output

    def _capture(self, args: tuple[torch.Tensor, ...]):
        statics = [a.clone() for a in args]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_ITERS):  # compiles (if compiled) and settles lazy init outside the capture
                self._call(*statics)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (template embedding, the other step in flight, pinned allocations)
        # may keep using the device while this thread captures.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            output = self._call(*statics)
        log.info("captured a CUDA graph for batch bucket %d", args[0].shape[0])
        return graph, statics, output

    def read_back(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Start copying a small result to the host; returns (host tensor, event to wait on or None)."""
        if not self.cuda:
            return out.contiguous(), None
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done


def single_threaded_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """`workers` started threads whose torch ops each run on one intra-op thread.

    For data-parallel chunks on a CPU: with OMP_WAIT_POLICY=PASSIVE every parallel region of every small op
    wakes sleeping OpenMP threads, and on a busy machine waits at its barrier for the slowest; independent
    single-threaded chunks have no per-op barrier. torch keeps the intra-op count per thread (OpenMP's
    per-thread setting, MKL's local one) once a thread has run its lazy init, so each worker runs that init
    and sets 1; the process-wide default (which `set_num_threads` also changes) is put back afterwards."""
    saved = torch.get_num_threads()
    started = threading.Barrier(workers)

    def one_thread() -> None:
        torch.get_num_threads()  # this thread's lazy init first: it would later re-read the global count
        torch.set_num_threads(1)

    pool = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=one_thread)
    try:
        list(pool.map(lambda _: started.wait(timeout=60), range(workers)))  # every worker exists now
    finally:
        torch.set_num_threads(saved)
    return pool


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    pad = t.new_zeros((rows - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])
