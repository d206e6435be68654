"""Dynamic micro-batching of recommendation requests.

Requests hand their work to one pipeline thread, which runs the stages over everything queued when it
becomes free (up to max_requests): concurrent requests share each model call (one HSTU encoding of B jagged
histories, one ranker forward over B x C rows) instead of taking turns at the GIL. A request that arrives
alone runs at once, so batching adds no wait at low load; under load it trades a little latency of the first
request in a batch for several times the throughput (benchmarks/serving.py). The batch runs
Pipeline.run_many, the same batched stage calls as `genrec pipeline evaluate`.

With a `prepare` function the queued work is a raw request, and the pipeline thread turns a whole batch into
RequestContexts first (the server reads every user's live history in one store round trip there): the
asyncio endpoint submits and awaits, and no thread per request waits in between (at 100 req/s the pool's
threads took 37% of the server's CPU samples, mostly waking up to hand a context over; py-spy).

With overlap=True (the stages run in model processes) preparing and running are two steps on their own
threads: a prepare thread reads the store and builds contexts for whatever is queued while the model
processes run the previous batch, and each run thread takes every context prepared by the time its process
is free. The store round trip and the contexts then leave the critical path instead of idling the model
process once per batch (ML-1M stack, 1 worker, 200 req/s: p99 43 / 36 -> 32 / 27 ms, back-to-back runs).
Not in-process: there the two threads only contend for the GIL (2 workers at 300 req/s: p99 41 -> 64 ms).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from genrec.pipeline.core import Candidates, RequestContext

# (pipeline, requests) -> one RequestContext per request, or the exception that request fails with
Prepare = Callable[[Any, list[Any]], list["RequestContext | BaseException"]]


def _as_contexts(pipeline: Any, requests: list[Any]) -> list[RequestContext | BaseException]:
    return list(requests)


class MicroBatcher:
    def __init__(
        self,
        max_requests: int = 32,
        on_batch: Any = None,
        prepare: Prepare | None = None,
        threads: int = 1,
        overlap: bool = False,
    ) -> None:
        self.max_requests = int(max_requests)
        # pipeline threads: more than one only when the stages run elsewhere (model processes), so that
        # each process has a batch while this process waits on the pipes
        self.threads = int(threads)
        self.overlap = bool(overlap)  # prepare the next batch while the current one runs (see the docstring)
        self.on_batch = on_batch  # called with each batch's size (a metric)
        self.prepare: Prepare = prepare or _as_contexts
        self._queue: queue.SimpleQueue[tuple[Any, Any, Future] | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[tuple[Any, Any, Future] | None] = queue.SimpleQueue()  # overlap: contexts
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, pipeline: Any, request: Any) -> Future[tuple[RequestContext, Candidates]]:
        """A future of (context, final candidates) of `request` through `pipeline` (a Pipeline), batched with
        concurrent requests; without batching (max_requests <= 1) it runs here and returns a done future."""
        fut: Future[tuple[RequestContext, Candidates]] = Future()
        if self.max_requests <= 1:
            self._run_group([(pipeline, request, fut)], self.prepare)
            return fut
        self._ensure_thread()
        self._queue.put((pipeline, request, fut))
        return fut

    def run(self, pipeline: Any, request: Any) -> Candidates:
        """The final candidates of `request` (blocking)."""
        return self.submit(pipeline, request).result()[1]

    def close(self) -> None:
        with self._lock:
            # one stop per thread that reads the request queue; the prepare thread passes them on
            for _ in range(1 if self.overlap else len(self._workers)):
                self._queue.put(None)
            for t in self._workers:
                t.join(timeout=10)
            self._workers = []

    def _ensure_thread(self) -> None:
        if not self._workers:
            with self._lock:
                if not self._workers:
                    run = self._loop_run if self.overlap else self._loop
                    workers = [threading.Thread(target=run, name=f"genrec-batcher-{i}", daemon=True) for i in range(self.threads)]  # fmt: skip
                    if self.overlap:
                        workers.append(threading.Thread(target=self._loop_prepare, name="genrec-prepare", daemon=True))  # fmt: skip
                    for t in workers:
                        t.start()
                    self._workers = workers

    def _take(self, source: queue.SimpleQueue) -> list[tuple[Any, Any, Future]] | None:
        """The next item and everything queued behind it (up to max_requests); None once closed."""
        first = source.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_requests:
            try:
                nxt = source.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # close(): finish this batch, then stop
                source.put(None)
                break
            batch.append(nxt)
        return batch

    @staticmethod
    def _by_pipeline(batch: list[tuple[Any, Any, Future]]) -> list[list[tuple[Any, Any, Future]]]:
        # a reload may leave requests of the old and the new pipeline in one batch: one run per pipeline
        by_pipe: dict[int, list[tuple[Any, Any, Future]]] = {}
        for item in batch:
            by_pipe.setdefault(id(item[0]), []).append(item)
        return list(by_pipe.values())

    def _loop(self) -> None:
        while (batch := self._take(self._queue)) is not None:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for group in self._by_pipeline(batch):
                self._run_group(group, self.prepare)

    def _loop_prepare(self) -> None:
        while (batch := self._take(self._queue)) is not None:
            for group in self._by_pipeline(batch):
                for ctx, fut in self._prepare_group(group, self.prepare):
                    self._ready.put((group[0][0], ctx, fut))
        for _ in range(self.threads):
            self._ready.put(None)

    def _loop_run(self) -> None:
        while (batch := self._take(self._ready)) is not None:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for group in self._by_pipeline(batch):
                MicroBatcher._run_contexts(group[0][0], [(ctx, fut) for _, ctx, fut in group])

    @staticmethod
    def _prepare_group(group: list[tuple[Any, Any, Future]], prepare: Prepare) -> list[tuple[RequestContext, Future]]:
        """The group's contexts with their futures; a request that cannot be prepared fails here."""
        # a request whose client went away was cancelled while queued (asyncio cancels the wrapped future):
        # drop it; the others' futures are running from here on, so a late cancel cannot fail set_result
        group = [item for item in group if item[2].set_running_or_notify_cancel()]
        if not group:
            return []
        try:
            made = prepare(group[0][0], [req for _, req, _ in group])
        except Exception as e:  # noqa: BLE001 - every request of the group fails with it (e.g. store down)
            made = [e] * len(group)
        ready: list[tuple[RequestContext, Future]] = []
        for (_, _, fut), ctx in zip(group, made, strict=True):
            if isinstance(ctx, BaseException):
                fut.set_exception(ctx)
            else:
                ready.append((ctx, fut))
        return ready

    @staticmethod
    def _run_group(group: list[tuple[Any, Any, Future]], prepare: Prepare) -> None:
        MicroBatcher._run_contexts(group[0][0], MicroBatcher._prepare_group(group, prepare))

    @staticmethod
    def _run_contexts(pipeline: Any, ready: list[tuple[RequestContext, Future]]) -> None:
        if not ready:
            return
        try:
            results = pipeline.run_many([ctx for ctx, _ in ready])
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others: run them one by one
            if len(ready) == 1:
                ready[0][1].set_exception(e)
                return
            for item in ready:
                MicroBatcher._run_contexts(pipeline, [item])
            return
        for (ctx, fut), res in zip(ready, results, strict=True):
            fut.set_result((ctx, res))
