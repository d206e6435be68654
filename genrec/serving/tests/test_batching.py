"""Micro-batched serving ranks each request exactly as it would alone (the offline pipeline's batched calls)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.bundle import Bundle
from genrec.data.sequences import leave_one_out
from genrec.pipeline.core import RequestContext
from genrec.pipeline.pipeline import Pipeline
from genrec.serving.batching import MicroBatcher


def _contexts(pipe: Pipeline, n: int) -> list[RequestContext]:
    split = leave_one_out(pipe.sequences)
    u, e, _ = split.eval_inputs("test")
    return pipe.offline_contexts(split.data, u[:n], e[:n], k=10)


def test_batched_requests_get_their_own_pages(stack: Path) -> None:
    pipe = Pipeline.from_bundle(Bundle.open(stack))
    alone = [pipe.run(c) for c in _contexts(pipe, 24)]
    sizes: list[int] = []
    release = threading.Event()

    def on_batch(n: int) -> None:
        sizes.append(n)
        release.wait(10)  # hold the first batch until every request is queued: the rest run as one batch

    batcher = MicroBatcher(max_requests=32, on_batch=on_batch)
    ctxs = _contexts(pipe, 24)
    ctxs[5].user_index, ctxs[5].history.items = -1, ctxs[5].history.items[:0]  # a cold request in the batch
    ctxs[5].history.timestamps = ctxs[5].history.timestamps[:0]
    ctxs[5].history.type_codes = ctxs[5].history.type_codes[:0]
    ctxs[5].history.purchased = ctxs[5].history.purchased[:0]
    out: dict[int, object] = {}

    def ask(i: int) -> None:
        out[i] = batcher.run(pipe, ctxs[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(ctxs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while sum(sizes) + batcher._queue.qsize() < len(ctxs) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(10)
    batcher.close()
    assert sum(sizes) == len(ctxs) and len(sizes) == 2  # the held batch, then all the others as one
    for i, page in out.items():
        if i == 5:
            assert len(page.items) == 10  # answered from the two-tower and popularity stages
            continue
        ref = alone[i]
        assert page.items.tolist() == ref.items.tolist()
        np.testing.assert_allclose(page.scores.numpy(), ref.scores.numpy(), rtol=1e-4, atol=1e-6)
        assert page.stages == ref.stages
    assert all("dlrm" in c.timings for c in ctxs)


def test_a_failing_request_does_not_fail_its_batch(stack: Path) -> None:
    pipe = Pipeline.from_bundle(Bundle.open(stack))
    ctxs = _contexts(pipe, 6)
    ctxs[2].allowed = torch.zeros(3, dtype=torch.bool)  # a broken request: its mask has the wrong length
    release = threading.Event()
    batcher = MicroBatcher(max_requests=8, on_batch=lambda n: release.wait(10))
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            results[i] = batcher.run(pipe, ctxs[i])
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(ctxs))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    release.set()
    for t in threads:
        t.join(10)
    batcher.close()
    assert isinstance(results[2], Exception)
    assert all(len(results[i].items) == 10 for i in range(len(ctxs)) if i != 2)


def test_prepare_turns_a_batch_into_contexts_and_its_errors_fail_only_their_requests(stack: Path) -> None:
    """The server queues raw requests; the pipeline thread prepares the whole batch at once (one store read)."""
    pipe = Pipeline.from_bundle(Bundle.open(stack))
    ctxs = _contexts(pipe, 6)
    alone = [pipe.run(c) for c in _contexts(pipe, 6)]
    calls: list[list[int]] = []

    def prepare(pipeline: Pipeline, reqs: list[int]) -> list:
        calls.append(list(reqs))
        if -1 in reqs:
            raise ConnectionError("store down")  # the whole group fails with it
        return [ValueError(f"bad request {r}") if r == 2 else ctxs[r] for r in reqs]

    release = threading.Event()
    batcher = MicroBatcher(max_requests=8, on_batch=lambda n: release.wait(10), prepare=prepare)
    futs = {i: batcher.submit(pipe, i) for i in range(6)}
    time.sleep(0.2)
    release.set()
    for i, fut in futs.items():
        if i == 2:
            with pytest.raises(ValueError, match="bad request 2"):
                fut.result(10)
            continue
        ctx, page = fut.result(10)
        assert ctx is ctxs[i] and page.items.tolist() == alone[i].items.tolist()
    assert sorted(r for c in calls for r in c) == list(range(6)) and len(calls) <= 2  # batched, not one by one
    with pytest.raises(ConnectionError):
        batcher.submit(pipe, -1).result(10)
    batcher.close()


def test_a_request_cancelled_while_queued_is_dropped_and_the_batcher_goes_on(stack: Path) -> None:
    """A client that disconnects cancels its queued request (asyncio.wrap_future): the batch runs the others."""
    pipe = Pipeline.from_bundle(Bundle.open(stack))
    ctxs = _contexts(pipe, 3)
    release = threading.Event()
    batcher = MicroBatcher(max_requests=8, on_batch=lambda n: release.wait(10))
    first = batcher.submit(pipe, ctxs[0])  # held in on_batch: the next two queue behind it
    time.sleep(0.1)
    gone, kept = batcher.submit(pipe, ctxs[1]), batcher.submit(pipe, ctxs[2])
    assert gone.cancel()
    release.set()
    assert len(first.result(10)[1].items) == 10 and len(kept.result(10)[1].items) == 10
    assert gone.cancelled()
    assert len(batcher.submit(pipe, _contexts(pipe, 1)[0]).result(10)[1].items) == 10  # the thread lives on
    batcher.close()


@pytest.mark.parametrize("n", [1])
def test_max_batch_one_runs_inline(stack: Path, n: int) -> None:
    pipe = Pipeline.from_bundle(Bundle.open(stack))
    batcher = MicroBatcher(max_requests=n)
    ctx = _contexts(pipe, 1)[0]
    assert batcher.run(pipe, ctx).items.tolist() == pipe.run(_contexts(pipe, 1)[0]).items.tolist()
    assert not batcher._workers


def test_validation_users_are_the_rankers_held_out_ones(stack: Path) -> None:
    """`genrec pipeline evaluate --split valid` scores only users whose validation target the ranker did not
    train on; bundles from before the list was stored rebuild the same users from the ranker's seed."""
    from genrec.pipeline.runs import ranker_holdout_users

    b = Bundle.open(stack)
    stored = ranker_holdout_users(b)
    assert stored is not None and 0 < len(stored) < len(b.sequences().offsets) - 1
    b.components["dlrm"].config.pop("holdout_users")
    np.testing.assert_array_equal(ranker_holdout_users(b), stored)


def test_two_pipeline_threads_run_two_batches_at_once() -> None:
    """threads=2 (one per model process): a second batch starts while the first still runs, and close() stops both."""
    import threading

    running, peak, lock, release = [0], [0], threading.Lock(), threading.Event()

    class Slow:
        def run_many(self, ctxs: list) -> list:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            release.wait(10)
            with lock:
                running[0] -= 1
            return list(ctxs)

    batcher = MicroBatcher(max_requests=1 << 10, threads=2)
    pipe = Slow()
    first = batcher.submit(pipe, "a")
    while running[0] < 1:
        threading.Event().wait(0.01)
    second = batcher.submit(pipe, "b")  # the first thread is busy: the other one takes it
    deadline = threading.Event()
    for _ in range(500):
        if peak[0] == 2:
            break
        deadline.wait(0.01)
    release.set()
    assert first.result(10) == ("a", "a") and second.result(10) == ("b", "b")
    assert peak[0] == 2
    batcher.close()
    assert not batcher._workers


def test_overlap_prepares_the_next_requests_while_a_batch_runs() -> None:
    """overlap=True (stages in a model process): requests that arrive while a batch runs are prepared at once,
    separately, and the next run takes all of them as one batch."""
    prepared: list[list[str]] = []
    ran: list[list[str]] = []
    release = threading.Event()

    def prepare(pipeline: object, reqs: list[str]) -> list:
        prepared.append(list(reqs))
        return [ValueError("bad") if r == "bad" else r for r in reqs]

    class Slow:
        def run_many(self, ctxs: list) -> list:
            ran.append(list(ctxs))
            release.wait(10)
            return [c.upper() for c in ctxs]

    batcher = MicroBatcher(max_requests=8, prepare=prepare, threads=1, overlap=True)
    pipe = Slow()
    first = batcher.submit(pipe, "a")
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.005)
    later = []
    for r in ("b", "bad", "c"):
        later.append(batcher.submit(pipe, r))
        while sum(len(p) for p in prepared) < 1 + len(later) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert prepared == [["a"], ["b"], ["bad"], ["c"]]  # each prepared on arrival, while "a" still runs
    assert ran == [["a"]]
    with pytest.raises(ValueError, match="bad"):
        later[1].result(10)  # failed in prepare, before any run
    release.set()
    assert first.result(10) == ("a", "A")
    assert later[0].result(10) == ("b", "B") and later[2].result(10) == ("c", "C")
    assert ran == [["a"], ["b", "c"]]  # the prepared requests ran as one batch
    batcher.close()
    assert not batcher._workers
