"""Micro-batching: concurrent single calls become one batched call.

Why: a text forward pass over 8 queries costs little more than over one, and a server with N
threads otherwise runs N small passes that fight over the same cores (see :class:`MicroBatcher`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Slot:
    __slots__ = ("item", "event", "result", "error", "lead", "done")

    def __init__(self, item):
        self.item = item
        self.event = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.lead = False
        self.done = False


class MicroBatcher:
    """Turns concurrent single calls into batched calls of ``fn(list) -> list``.

    Why: one text forward pass over 8 queries costs little more than over one, and a server with
    N threads otherwise runs N small passes that fight over the same cores. No background thread:
    the first caller leads and runs a batch containing everything queued; callers arriving while it
    runs queue up, and when the batch ends the oldest waiting caller leads the next one.

    ``lanes``: how many batches may run at once. One lane when a pass's cost barely grows with its
    batch (text encodes); one per core when it grows with the batch (the matching head's cost is
    per pair, so a second lane puts a second core to work while the first is busy; the passes
    run GIL-free as TorchScript, see :meth:`retrieval.encoder.QueryEncoder._traced`).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 64, lanes: int = 1):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.lanes = max(1, int(lanes))
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._running = 0
        self.batches = 0  # how many batches ran (for tests and benchmarks)
        self.items = 0

    def __call__(self, item):
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            if self._running < self.lanes:
                self._running += 1
                slot.lead = True
        if not slot.lead:
            slot.event.wait()
        if not slot.done:  # asked to lead
            self._run_batch(slot)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run_batch(self, own: _Slot) -> None:
        with self._lock:  # the leader's own item, then the oldest waiting ones no other lane leads
            batch = [own] + [p for p in self._pending if not p.lead][: self.max_batch - 1]
            taken = set(map(id, batch))
            self._pending = [p for p in self._pending if id(p) not in taken]
        try:
            results = self.fn([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except BaseException as exc:  # every waiter gets the error instead of hanging
            for s in batch:
                s.error = exc
        with self._lock:
            self.batches += 1
            self.items += len(batch)
            for s in batch:
                s.done = True
                s.event.set()
            waiting = [p for p in self._pending if not p.lead]
            if waiting:  # this lane passes to the oldest caller not already leading
                waiting[0].lead = True
                waiting[0].event.set()
            else:
                self._running -= 1
