"""A device-resident pool of fixed-shape per-track tensors (e.g. template tokens), indexed by slot.

A step gathers the batch's rows with one `index_select` instead of stacking N tensors (and uploading the
CPU ones) every frame. A `Slot` is a handle held by the track's state; when the last state holding it is
garbage collected the row goes back to the free list, so callers never free anything by hand.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import torch


class Slot:
    """One row of a `SlotPool`; the row is freed when this object dies."""

    __slots__ = ("__weakref__", "generation", "index", "pool_id")

    def __init__(self, pool: SlotPool, index: int) -> None:
        self.index = index
        self.pool_id = id(pool)
        self.generation = pool.generation  # of the storage the state's view was taken from
        weakref.finalize(self, pool._release, index)

    def __reduce__(self):  # never travels: a restored state re-homes its tokens instead
        raise TypeError("a Slot is a handle into one engine's device memory and cannot be pickled")


class SlotPool:
    """Rows of shape `row_shape` in `dtype` on `device`; grows by doubling."""

    def __init__(self, row_shape: Sequence[int], dtype: torch.dtype, device: torch.device,
                 capacity: int = 64) -> None:
        self.row_shape = tuple(row_shape)
        self.data = torch.zeros((capacity, *self.row_shape), dtype=dtype, device=device)
        self._free = list(range(capacity - 1, -1, -1))
        # Re-entrant: a dead Slot's finalizer may run (garbage collection) while this thread holds the lock.
        self._lock = threading.RLock()
        self._alive: weakref.WeakSet[Slot] = weakref.WeakSet()
        self.generation = 0  # bumped when the storage is replaced (growth)

    def __len__(self) -> int:
        """Rows in use."""
        with self._lock:
            return self.data.shape[0] - len(self._free)

    def owns(self, slot: Slot | None) -> bool:
        return slot is not None and slot.pool_id == id(self) and slot in self._alive

    def put(self, rows: torch.Tensor) -> list[Slot]:
        """Store (N, *row_shape) rows (any device/dtype) in one copy; returns their slots."""
        n = rows.shape[0]
        with self._lock:
            while len(self._free) < n:
                self._grow()
            indices = [self._free.pop() for _ in range(n)]
            index = torch.tensor(indices, dtype=torch.long).to(self.data.device, non_blocking=True)
            self.data.index_copy_(0, index, rows.to(self.data.device, self.data.dtype))
            slots = [Slot(self, i) for i in indices]
            for slot in slots:
                self._alive.add(slot)
        return slots

    def view(self, slot: Slot) -> torch.Tensor:
        """The slot's row (a view of the pool's current storage)."""
        return self.data[slot.index]

    def gather(self, slots: Sequence[Slot]) -> torch.Tensor:
        """(N, *row_shape) rows of `slots`, in order."""
        index = torch.tensor([s.index for s in slots], dtype=torch.long)
        with self._lock:
            return self.data.index_select(0, index.to(self.data.device, non_blocking=True))

    def _grow(self) -> None:
        old = self.data
        cap = old.shape[0]
        self.data = torch.zeros((2 * cap, *self.row_shape), dtype=old.dtype, device=old.device)
        self.data[:cap].copy_(old)
        self._free = list(range(2 * cap - 1, cap - 1, -1)) + self._free
        self.generation += 1

    def _release(self, index: int) -> None:
        with self._lock:
            self._free.append(index)
