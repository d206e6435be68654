"""The model stages in their own process: HTTP, the store and request contexts in the server process, the
pipeline's stages (the models) in a child, so the two halves run on two cores instead of taking turns at one GIL.

    host = ModelProcess(config)            # spawns the child (imports torch + genrec: seconds)
    remote = host.attach(model)            # the child loads the same bundle; a RemoteModel wrapping `model`
    remote.run_many(ctxs)                  # contexts go over a pipe, final candidates come back

Why: one server process is GIL-bound at about one core. On ML-1M's full stack (2 retrievers -> Wide & Deep
over 200 candidates -> re-rank) at 200 req/s on 2 cores, py-spy put 43% of its samples in the stages and most
of the rest in uvicorn / FastAPI / the store, all under one GIL (benchmarks/serving.py, model_process off/on).

The server process keeps its own copy of the bundle (ServingModel): it builds every request's context with it
(history, hard-constraint mask), writes the response from its vocabulary and catalog, and runs the stages itself
whenever the child cannot: while the child is starting or loading, for a generation the child has dropped, or
after the child died (it is restarted in the background). So a request never fails because of the child, and a
reload swaps in a new RemoteModel only once the child holds the new bundle. Both copies load the same files
with the same code, so the child's candidates are the local ones (tested). The cost: the bundle in memory
twice, and one pickle round trip per batch (about 0.1 ms at ML-1M's sizes; `transfer` in timings_ms).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing as mp
import pickle
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genrec.pipeline.core import Candidates, RequestContext

if TYPE_CHECKING:
    from genrec.serving.config import ServeConfig
    from genrec.serving.pipeline import ServingModel

log = logging.getLogger("genrec.serving")


class ModelProcessDown(RuntimeError):
    """The child is gone or does not hold the asked generation: the caller runs the stages itself."""


# ---------------------------------------------------------------------------------------------------
# what crosses the pipe: numpy instead of tensors (cheaper to pickle), no retrieval state
# ---------------------------------------------------------------------------------------------------


def _pack(ctx: RequestContext) -> RequestContext:
    return dataclasses.replace(ctx, allowed=ctx.allowed.numpy(), timings={}, retrieved={}, context_used=[])


def _unpack(ctx: RequestContext) -> RequestContext:
    ctx.allowed = torch.from_numpy(ctx.allowed)
    return ctx


def _result(ctx: RequestContext, c: Candidates) -> tuple:
    return (c.items.numpy(), c.scores.numpy(), c.stages, c.tiers, ctx.timings, ctx.context_used)


# ---------------------------------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------------------------------


def _child_main(requests: Any, control: Any, config: ServeConfig) -> None:
    """Runs in the spawned process: batches on `requests` (the server's pipeline thread is the only sender),
    loads and drops on `control` (a thread here, so a reload's seconds of loading do not stall requests)."""
    import sys

    from genrec.serving.pipeline import ServingModel

    torch.set_num_threads(config.threads)
    sys.setswitchinterval(config.switch_interval_ms / 1e3)
    models: dict[int, ServingModel] = {}

    def control_loop() -> None:
        while True:
            try:
                op, gen, args = control.recv()
            except (EOFError, OSError):
                return
            if op == "load":
                run_dir, updates = args
                try:
                    models[gen] = ServingModel.load(run_dir, config, catalog_updates=updates)
                    # the model lives until it is dropped: keep its objects out of the cyclic GC's passes
                    # (a full pass over a loaded bundle is a tail-latency spike for the batch it lands in)
                    gc.collect()
                    gc.freeze()
                    control.send(("ok", gen, None))
                except Exception as e:  # noqa: BLE001 - reported to the server, which keeps its own copy
                    control.send(("error", gen, f"{type(e).__name__}: {e}"))
            elif op == "drop":
                models.pop(gen, None)

    threading.Thread(target=control_loop, name="genrec-model-control", daemon=True).start()
    while True:
        try:
            gen, packed = pickle.loads(requests.recv_bytes())
        except (EOFError, OSError):
            return  # the server went away
        t0 = time.perf_counter()
        model = models.get(gen)
        try:
            if model is None:
                out: tuple = ("gone", None, 0.0)
            else:
                ctxs = [_unpack(c) for c in packed]
                out = ("ok", [_result(c, r) for c, r in zip(ctxs, model.run_many(ctxs), strict=True)], 0.0)
        except Exception as e:  # noqa: BLE001 - the server retries such a batch request by request
            out = ("error", f"{type(e).__name__}: {e}", 0.0)
        out = (out[0], out[1], time.perf_counter() - t0)
        requests.send_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------------------------------------------
# the server's side
# ---------------------------------------------------------------------------------------------------


class _Child:
    """One spawned process and its two pipes."""

    def __init__(self, config: ServeConfig) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the server's threads and torch state
        self.req, child_req = ctx.Pipe()
        self.ctl, child_ctl = ctx.Pipe()
        self.process = ctx.Process(
            target=_child_main, args=(child_req, child_ctl, config), name="genrec-models", daemon=True
        )
        self.process.start()
        child_req.close()
        child_ctl.close()

    def load(self, gen: int, model: ServingModel, timeout_s: float) -> None:
        self.ctl.send(("load", gen, (model.run_dir, model.catalog_updates)))
        if not self.ctl.poll(timeout_s):
            raise ModelProcessDown(f"the model process did not load {model.run_dir} in {timeout_s:.0f} s")
        status, got, msg = self.ctl.recv()
        if status != "ok" or got != gen:
            raise ModelProcessDown(f"the model process cannot load {model.run_dir}: {msg}")

    def close(self) -> None:
        for conn in (self.req, self.ctl):
            conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


class ModelProcess:
    """`processes` children, each holding the models of one or more bundle generations; a batch runs on
    whichever child is free (the server's pipeline threads, one per child, keep them all busy)."""

    def __init__(self, config: ServeConfig, processes: int = 1, start_timeout_s: float = 300.0) -> None:
        self.config = config
        self.processes = int(processes)
        self.start_timeout_s = start_timeout_s
        self._gen = 0
        self._control_lock = threading.Lock()  # one load at a time
        self.down: str | None = None  # why the children cannot run batches now
        self._start()

    def _start(self) -> None:
        self.children = [_Child(self.config) for _ in range(self.processes)]
        self._free: queue.SimpleQueue[_Child] = queue.SimpleQueue()  # a child is busy while it is out of here
        for c in self.children:
            self._free.put(c)
        self.down = None

    @property
    def alive(self) -> bool:
        return self.down is None and all(c.process.is_alive() for c in self.children)

    def restart(self) -> None:
        self.close()
        self._start()

    def attach(self, model: ServingModel) -> RemoteModel:
        """Every child loads `model`'s bundle (same folder, same catalog updates); blocks until they have.
        Raises ModelProcessDown when one cannot (the caller keeps serving `model` in process)."""
        with self._control_lock:
            self._gen += 1
            gen = self._gen
            try:
                for c in self.children:
                    c.load(gen, model, self.start_timeout_s)
            except (EOFError, OSError) as e:
                self.down = f"model process exited ({e or type(e).__name__})"
                raise ModelProcessDown(self.down) from None
            except ModelProcessDown:
                self.drop(gen)
                raise
        return RemoteModel(model, self, gen)

    def drop(self, gen: int) -> None:
        for c in self.children:
            try:
                c.ctl.send(("drop", gen, None))
            except (EOFError, OSError):
                pass

    def run_many(self, gen: int, ctxs: list[RequestContext]) -> list[Candidates]:
        if self.down is not None:
            raise ModelProcessDown(self.down)
        t0 = time.perf_counter()
        payload = pickle.dumps((gen, [_pack(c) for c in ctxs]), protocol=pickle.HIGHEST_PROTOCOL)
        child = self._free.get()
        try:
            child.req.send_bytes(payload)
            status, body, child_s = pickle.loads(child.req.recv_bytes())
        except (EOFError, OSError) as e:
            reason = f"model process exited ({e or type(e).__name__})"
            if child in self.children:  # not one a restart has just replaced
                self.down = reason
            raise ModelProcessDown(reason) from None
        finally:
            self._free.put(child)
        if status == "gone":
            raise ModelProcessDown(f"the model process no longer holds generation {gen}")
        if status == "error":  # the local run raises the same error as its own type (a RequestError: a 422)
            raise ModelProcessDown(f"model process: {body}")
        transfer = time.perf_counter() - t0 - child_s
        out = []
        for ctx, (items, scores, stages, tiers, timings, used) in zip(ctxs, body, strict=True):
            ctx.timings.update(timings)
            ctx.timings["transfer"] = transfer
            ctx.context_used = used
            out.append(Candidates(torch.from_numpy(np.asarray(items)), torch.from_numpy(np.asarray(scores)), stages, tiers))  # fmt: skip
        return out

    def close(self) -> None:
        for c in self.children:
            c.close()


class RemoteModel:
    """A ServingModel whose stages run in the model process: everything else (contexts, vocabulary,
    catalog, describe) is the wrapped local model's, and so are the stages whenever the child cannot run them."""

    def __init__(self, local: ServingModel, host: ModelProcess, gen: int) -> None:
        self.local, self.host, self.gen = local, host, gen
        self.on_down: Any = None  # called (no arguments) when the child is found gone: the server restarts it

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def run_many(self, ctxs: list[RequestContext]) -> list[Candidates]:
        try:
            return self.host.run_many(self.gen, ctxs)
        except ModelProcessDown as e:
            if not self.host.alive and self.on_down is not None:
                self.on_down(str(e))
            return self.local.run_many(ctxs)

    def run(self, ctx: RequestContext) -> Candidates:
        return self.run_many([ctx])[0]
