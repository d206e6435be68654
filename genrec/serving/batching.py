"""Dynamic micro-batching of recommendation requests.

Request threads hand their RequestContext to one pipeline thread, which runs the stages over everything
queued when it becomes free (up to max_requests): concurrent requests share each model call (one HSTU
encoding of B jagged histories, one ranker forward over B x C rows) instead of taking turns at the GIL. A
request that arrives alone runs at once, so batching adds no wait at low load; under load it trades a
little latency of the first request in a batch for several times the throughput (benchmarks/serving.py).
The batch runs Pipeline.run_many, the same batched stage calls as `genrec pipeline evaluate`.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from genrec.pipeline.core import Candidates, RequestContext


class MicroBatcher:
    def __init__(self, max_requests: int = 32, on_batch: Any = None) -> None:
        self.max_requests = int(max_requests)
        self.on_batch = on_batch  # called with each batch's size (a metric)
        self._queue: queue.SimpleQueue[tuple[Any, RequestContext, Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, pipeline: Any, ctx: RequestContext) -> Candidates:
        """The final candidates of `ctx` through `pipeline` (a Pipeline), batched with concurrent requests."""
        if self.max_requests <= 1:
            return pipeline.run(ctx)
        self._ensure_thread()
        fut: Future[Candidates] = Future()
        self._queue.put((pipeline, ctx, fut))
        return fut.result()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="genrec-batcher", daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_requests:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:  # close(): finish this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(nxt)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            # a reload may leave requests of the old and the new pipeline in one batch: one run per pipeline
            by_pipe: dict[int, list[tuple[Any, RequestContext, Future]]] = {}
            for item in batch:
                by_pipe.setdefault(id(item[0]), []).append(item)
            for group in by_pipe.values():
                self._run_group(group)

    @staticmethod
    def _run_group(group: list[tuple[Any, RequestContext, Future]]) -> None:
        pipeline = group[0][0]
        try:
            results = pipeline.run_many([ctx for _, ctx, _ in group])
        except Exception:  # noqa: BLE001 - one bad request must not fail the others: run them one by one
            if len(group) == 1:
                _, ctx, fut = group[0]
                try:
                    fut.set_result(pipeline.run(ctx))
                except Exception as e:  # noqa: BLE001 - the request thread re-raises it
                    fut.set_exception(e)
                return
            for item in group:
                MicroBatcher._run_group([item])
            return
        for (_, _, fut), res in zip(group, results, strict=True):
            fut.set_result(res)
