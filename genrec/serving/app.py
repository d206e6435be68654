"""The HTTP API: FastAPI app over a ServingModel (a bundle's Pipeline, hot-swappable) and an EventStore.

    app = create_app(ServeConfig(store="sqlite:///events.db"), run_dir="runs/ml1m-stack")   # a bundle folder
    uvicorn.run(app, host="127.0.0.1", port=8000)          # OpenAPI UI at /docs

Endpoints: POST /v1/recommend, GET /v1/users/{id}/history, GET /v1/items/{id}, POST /v1/events,
POST /v1/admin/reload, POST /v1/admin/catalog, GET /healthz, /readyz, /metrics. Every error is {"error": "..."}:
bad input is a 422 that names the field (413 for an oversize body or event batch, 409 for an event_id reused
with another payload, 404 / 405 naming the path and method); a request never sees a stack trace.

/v1/recommend runs the bundle's pipeline (the stage objects `genrec pipeline evaluate` scores) and answers
each item's score and the stage that last scored it (a retriever, popular, the ranker); per-stage latency is
in /metrics. POST /v1/admin/reload {"bundle": PATH} ("run_dir" is an alias) loads another bundle and swaps it
in atomically. POST /v1/admin/catalog {"items": [{"item_id": ..., "category": ..., ...}]} adds or updates
catalog items without retraining (a new item's vector is built from its attributes) and swaps the same way.
Several worker processes and replicas: see genrec/serving/cli.py.

Concurrency: endpoints are sync functions run in the server's thread pool (torch and SQLite release the
GIL). Each request reads `state.bundle` once, so a reload that swaps the reference lets requests in flight
finish on the model they started with.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import secrets
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import polars as pl
from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from genrec.data.io import integer_seconds, parse_timestamps
from genrec.pipeline.catalog import merge_rows
from genrec.serving.batching import MicroBatcher
from genrec.serving.config import ServeConfig
from genrec.serving.metrics import HTTP_METHODS, OTHER, ServingMetrics, bounded, status_class
from genrec.serving.model_process import ModelProcess, ModelProcessDown, RemoteModel
from genrec.serving.pipeline import Filters, RequestContext, RequestError, ServingModel
from genrec.serving.store import Conflict, Event, EventStore, open_store

log = logging.getLogger("genrec.serving")

_ID = r"^[^\x00-\x1f\x7f]+$"  # any printable text; control characters would corrupt logs and keys
IdStr = Annotated[str, Field(min_length=1, max_length=256, pattern=_ID)]
Scalar = str | int | float | bool


# ---------------------------------------------------------------------------------------------------
# request / response models
# ---------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # numeric ids are fine as ids


class RecommendFilters(_Strict):
    category: IdStr | list[IdStr] | None = Field(None, description="one catalog category or a list of them")
    price_min: float | None = Field(None, ge=0, allow_inf_nan=False)
    price_max: float | None = Field(None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self) -> RecommendFilters:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError("price_min must not exceed price_max")
        return self

    def to_filters(self) -> Filters:
        cats = [self.category] if isinstance(self.category, str) else self.category
        return Filters(categories=cats, price_min=self.price_min, price_max=self.price_max)


class RecommendRequest(_Strict):
    user_id: IdStr
    k: int = Field(10, strict=True, description="number of items, 1..max_k (config, default 100)")
    context: dict[Annotated[str, Field(max_length=64)], Scalar] | None = Field(
        None, description="e.g. {region: north, age_group: 25-34, category: c3}; drives cold start", max_length=32
    )
    exclude_item_ids: list[IdStr] | None = Field(None, max_length=10_000)
    filters: RecommendFilters | None = None


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    stage: str = Field(description="the pipeline stage that produced this item")
    category: str | None = None


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    cold_start: bool = Field(description="no known history: context-aware popular items")
    known_user: bool = Field(description="the run's dataset has this user")
    history_length: int
    context_used: list[str]
    model: str
    timings_ms: dict[str, float]


TIMESTAMP_FORMATS = (
    "unix seconds or milliseconds (a number or a numeric string), or an ISO 8601 date / datetime "
    "('2024-05-01', '2024-05-01T12:00:00Z', '2024-05-01 12:00:00+02:00'; naive is UTC)"
)


class EventIn(_Strict):
    event_id: IdStr = Field(
        max_length=128, description="client-chosen; a repeat with the same payload is stored once, one with "
        "another payload is a 409 conflict"
    )  # fmt: skip
    user_id: IdStr
    item_id: IdStr
    event_type: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["view"])
    timestamp: int | float | str = Field(
        description=f"{TIMESTAMP_FORMATS}; read as the data files are (genrec.data.io.parse_timestamps); at most "
        "max_future_skew_s (config, default 1 day) after the server's clock",
        examples=[1_714_564_800, "2024-05-01T12:00:00Z"],
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp_kind(cls, v: Any) -> Any:
        # one message for every wrong kind (true, null, a list) instead of one per member of the union
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"expected {TIMESTAMP_FORMATS}")
        if isinstance(v, str) and len(v) > 64:
            raise ValueError("a timestamp string is at most 64 characters")
        return v


class EventBatch(_Strict):
    events: list[EventIn] = Field(min_length=1, description="at most max_batch (config, default 1000): else 413")


class EventsResponse(BaseModel):
    stored: int
    duplicates: int = Field(description="events whose event_id is already stored with the same payload")
    unknown_items: int = Field(description="events on items the current model does not know (stored anyway)")


class EventPayload(BaseModel):
    user_id: str
    item_id: str
    event_type: str
    timestamp: int = Field(description="unix seconds")


class EventConflict(BaseModel):
    field: str = Field(description="the request field, e.g. events[3].event_id")
    index: int
    event_id: str
    sent: EventPayload
    existing: EventPayload
    existing_index: int | None = Field(description="null: already stored; else an earlier event of this batch")


class ConflictResponse(BaseModel):
    error: str
    conflicts: list[EventConflict]


class HistoryEvent(BaseModel):
    item_id: str
    event_type: str
    timestamp: int
    source: str = Field(description="dataset | live")
    event_id: str | None = None
    known_to_model: bool


class HistoryResponse(BaseModel):
    user_id: str
    known_user: bool
    total: int
    events: list[HistoryEvent]


class ItemResponse(BaseModel):
    item_id: str
    known_to_model: bool
    in_catalog: bool
    seen_in_events: bool
    popularity: int = Field(description="interactions in the run's dataset")
    attributes: dict[str, Any]


class ReloadRequest(_Strict):
    bundle: str | None = Field(None, min_length=1, max_length=4096, description="a bundle folder on the server")
    run_dir: str | None = Field(None, min_length=1, max_length=4096, description="alias of bundle")

    @field_validator("bundle", "run_dir")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain NUL")
        return v

    @model_validator(mode="after")
    def _one(self) -> ReloadRequest:
        if (self.bundle is None) == (self.run_dir is None):
            raise ValueError("give exactly one of bundle (or its alias run_dir)")
        return self

    @property
    def path(self) -> str:
        return self.bundle if self.bundle is not None else self.run_dir  # type: ignore[return-value]

    @property
    def field(self) -> str:
        return "bundle" if self.bundle is not None else "run_dir"


CatalogValue = Scalar | list[Scalar] | None


class CatalogRequest(_Strict):
    items: list[dict[Annotated[str, Field(min_length=1, max_length=128)], CatalogValue]] = Field(
        min_length=1,
        max_length=10_000,
        description="catalog rows: item_id plus catalog columns (category, brand, ...); a known item_id replaces "
        "its row, a new one adds the item, recommendable through its attributes",
        examples=[[{"item_id": "sku-123", "category": "c3", "brand": "b7", "price": 19.9}]],
    )

    @model_validator(mode="after")
    def _ids(self) -> CatalogRequest:
        for i, row in enumerate(self.items):
            v = row.get("item_id")
            if not isinstance(v, str | int) or isinstance(v, bool) or not str(v).strip():
                raise ValueError(f"items[{i}]: needs an item_id (a non-empty string)")
            row["item_id"] = str(v)
        return self


class CatalogResponse(BaseModel):
    added: list[str] = Field(description="item ids new to the served catalog")
    updated: int = Field(description="rows that replaced a known item's row")
    num_items: int
    seconds: float


class ReloadResponse(BaseModel):
    bundle: str
    previous_bundle: str | None
    run_dir: str = Field(description="same as bundle (older clients)")
    previous_run_dir: str | None
    stages: list[str]
    num_items: int
    seconds: float


# ---------------------------------------------------------------------------------------------------
# state, errors, middleware
# ---------------------------------------------------------------------------------------------------


class ServerState:
    def __init__(self, config: ServeConfig, store: EventStore, metrics: ServingMetrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.bundle: ServingModel | RemoteModel | None = None
        self.load_error: str | None = None
        self.reload_lock = threading.Lock()
        self.swap_lock = threading.Lock()  # the compare-and-swap of a model process attaching in the background
        self.host: ModelProcess | None = None  # config.model_processes: the stages' own processes
        self.host_state = "off"  # off | starting | ready | failed: ... (readyz)
        self.host_restarts = 0
        self._last_restart = -1e9
        self.batcher = MicroBatcher(
            config.max_batch_requests,
            on_batch=lambda n: metrics.batch_size.observe(n),
            prepare=self.contexts,
            threads=max(1, config.model_processes),
            overlap=config.model_processes > 0,
        )

    def served(self, model: ServingModel) -> ServingModel | RemoteModel:
        """`model` with its stages in the model process when there is one that can load it (blocks while it
        does), else `model` itself: a failing model process never fails a load or a reload."""
        if self.host is None:
            return model
        try:
            remote = self.host.attach(model)
        except ModelProcessDown as e:
            self.host_state = f"failed: {e}"
            log.warning("stages run in the server process: %s", e)
            return model
        remote.on_down = self.model_process_down
        self.host_state = "ready"
        return remote

    def swap(self, new: ServingModel | RemoteModel, expected: Any = None) -> bool:
        """Make `new` the served model (when `expected` is given: only if it still is the served one); the
        child drops the old generation (requests still queued for it run in this process)."""
        with self.swap_lock:
            old = self.bundle
            if expected is not None and old is not expected:
                if isinstance(new, RemoteModel):
                    new.host.drop(new.gen)
                return False
            self.bundle = new  # the atomic swap: one reference assignment
        if isinstance(old, RemoteModel) and not (isinstance(new, RemoteModel) and new.gen == old.gen):
            old.host.drop(old.gen)
        return True

    def attach_model_process(self) -> None:
        """Background: move the served model's stages to the (new or restarted) model process."""
        current = self.bundle
        if current is None or self.host is None:
            return
        local = current.local if isinstance(current, RemoteModel) else current
        self.host_state = "starting"
        self.swap(self.served(local), expected=current)

    def model_process_down(self, reason: str) -> None:
        """A RemoteModel found the child gone: restart it once per 10 s at most, in the background."""
        host = self.host
        if host is None or self.host_state == "starting":
            return
        if time.monotonic() - self._last_restart < 10:
            return
        self._last_restart = time.monotonic()
        self.host_state = "starting"
        log.warning("%s: restarting it; its requests run in the server process meanwhile", reason)

        def restart() -> None:
            host.restart()
            self.host_restarts += 1
            self.attach_model_process()

        threading.Thread(target=restart, name="genrec-model-restart", daemon=True).start()

    def contexts(self, bundle: ServingModel, reqs: list[RecommendRequest]) -> list[RequestContext | BaseException]:
        """The batch's RequestContexts (run by the pipeline thread): every user's live history in one store
        call, then each request's dataset history and hard constraints; a bad request fails only itself."""
        t0 = time.perf_counter()
        lives = _store_call(self.store.histories, [r.user_id for r in reqs], self.config.live_history)
        t1 = time.perf_counter()
        out: list[RequestContext | BaseException] = []
        for req, live in zip(reqs, lives, strict=True):
            t = time.perf_counter()
            try:
                ctx = bundle.context(
                    req.user_id,
                    req.k,
                    live,
                    context=req.context,
                    exclude=req.exclude_item_ids,
                    filters=req.filters.to_filters() if req.filters else None,
                )
            except Exception as e:  # noqa: BLE001 - e.g. a RequestError: this request's 422
                out.append(e)
                continue
            ctx.timings = {"history": t1 - t0, "prepare": time.perf_counter() - t}
            out.append(ctx)
        return out


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    """422 with a one-line summary naming the fields; details keep only JSON-safe parts (inputs can be NaN,
    bytes or huge, and pydantic's ctx can hold exception objects)."""
    summary = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
    detail = [{"loc": [str(x) if not isinstance(x, int) else x for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors[:50]]  # fmt: skip
    return JSONResponse(status_code=422, content={"error": summary, "detail": detail})


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


class _TooLarge(Exception):
    pass


class BodyLimitAndMetrics:
    """Pure ASGI middleware: 413 for bodies over the limit, request counts and latency per route template.

    Labels come from bounded sets: the app's route templates and the standard HTTP methods, anything else
    (an unknown path, an invented method) is "other"."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.state.config.max_body_bytes
        t0 = time.perf_counter()
        status = 500
        started = False
        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > limit:
                raise _TooLarge
            seen = 0

            async def limited_receive() -> dict:
                nonlocal seen
                msg = await receive()
                if msg["type"] == "http.request":
                    seen += len(msg.get("body", b""))
                    if seen > limit:
                        raise _TooLarge
                return msg

            async def tracking_send(msg: dict) -> None:
                nonlocal status, started
                if msg["type"] == "http.response.start":
                    status, started = msg["status"], True
                await send(msg)

            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            status = 413
            resp = _error(413, f"request body over the limit of {limit} bytes")
            await resp(scope, receive, send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or OTHER  # a template of the app's own routes: bounded
            method = bounded(str(scope.get("method", "")), HTTP_METHODS)
            m = self.state.metrics
            m.requests.inc(endpoint=endpoint, method=method, status=status_class(status))
            m.latency.observe(time.perf_counter() - t0, endpoint=endpoint)


# ---------------------------------------------------------------------------------------------------
# app
# ---------------------------------------------------------------------------------------------------


def create_app(
    config: ServeConfig,
    run_dir: str | Path | None = None,
    bundle: ServingModel | None = None,
    store: EventStore | None = None,
    workers: int = 1,
) -> FastAPI:
    """The API. Give a loaded `bundle`, or a `run_dir` (a bundle folder) to load in the background (readyz
    says when). workers: how many processes serve this port (reload is refused when more than one)."""
    if bundle is None and run_dir is None:
        raise ValueError("create_app needs run_dir or bundle")
    config.validate()  # a wrong type is a start-up error, not a 500 on the first request that reads it
    metrics = ServingMetrics()
    state = ServerState(config, store or open_store(config.store), metrics)
    state.bundle = bundle

    def load_initial() -> None:
        try:
            state.bundle = ServingModel.load(run_dir, config)  # type: ignore[arg-type]
            log.info("model from %s ready", run_dir)
            if state.host is not None:
                state.attach_model_process()
        except Exception as e:  # noqa: BLE001 - reported by /readyz, the process stays up for diagnosis
            state.load_error = f"{type(e).__name__}: {e}"
            log.error("cannot load %s: %s", run_dir, state.load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        torch.set_num_threads(config.threads)
        sys.setswitchinterval(config.switch_interval_ms / 1e3)
        # the thread pool runs the blocking endpoints (events: an fsync each) and unbatched recommends
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.max_concurrency
        if config.model_processes:
            state.host = ModelProcess(
                config, config.model_processes
            )  # starts importing now; loads once there is a bundle
        if state.bundle is None:
            threading.Thread(target=load_initial, name="genrec-load", daemon=True).start()
        else:
            # the startup model lives as long as the process: keep its objects out of the cyclic GC's passes
            gc.collect()
            gc.freeze()
            if state.host is not None:
                state.host_state = "starting"  # served in process until the child holds it
                threading.Thread(target=state.attach_model_process, name="genrec-attach", daemon=True).start()
        yield
        state.batcher.close()
        if state.host is not None:
            state.host.close()
        state.store.close()

    app = FastAPI(
        title="genrec serving",
        version="1",
        description="Multi-stage recommendations (sequence-model retrieval, popular backfill, rule re-ranking) "
        "over live user history.",
        lifespan=lifespan,
    )
    app.state.genrec = state

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _unprocessable(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404 / 405 in the same {"error": ...} shape as every other error, naming what was asked for
        asked = f"{request.method[:16]} {request.url.path[:200]}"
        return JSONResponse(
            status_code=exc.status_code, content={"error": f"{asked}: {exc.detail}"}, headers=exc.headers
        )

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        loc = ["body", *exc.field.split(".")]
        return _unprocessable([{"loc": loc, "msg": exc.message, "type": "value_error"}])

    def admin_denied(authorization: str | None, what: str, instead: str) -> JSONResponse | None:
        """The error response of an admin request that may not run (token, workers), else None."""
        token = config.admin_token
        if not token:
            return _error(403, "admin endpoints are disabled: set admin_token in the config or GENREC_ADMIN_TOKEN")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not authorization or not authorization.startswith("Bearer ") or not secrets.compare_digest(given.encode(), token.encode()):  # fmt: skip
            return JSONResponse(status_code=401, content={"error": "missing or wrong bearer token"}, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if workers > 1:
            return _error(409, f"{what} reaches one of {workers} worker processes: {instead}")
        return None

    def ready_bundle() -> ServingModel:
        b = state.bundle
        if b is None:
            raise _NotReady(state.load_error or "model is loading")
        return b

    @app.exception_handler(_NotReady)
    async def on_not_ready(request: Request, exc: _NotReady) -> JSONResponse:
        return _error(503, f"not ready: {exc}")

    @app.exception_handler(_StoreDown)
    async def on_store_down(request: Request, exc: _StoreDown) -> JSONResponse:
        return _error(503, f"event store unavailable: {exc}")

    # ---- recommendations ----
    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommend"])
    async def recommend(req: RecommendRequest) -> Response:
        """Top-k items for a user: the sequence model reads the user's dataset history plus every stored event."""
        if not 1 <= req.k <= config.max_k:
            raise RequestError("k", f"must be between 1 and {config.max_k}, got {req.k}")
        bundle = ready_bundle()  # one reference for the whole request: a reload cannot change it mid-way
        if config.max_batch_requests > 1:
            # the pipeline thread reads the store, builds the context and ranks; the event loop only waits
            ctx, cands = await asyncio.wrap_future(state.batcher.submit(bundle, req))
        else:
            ctx, cands = await anyio.to_thread.run_sync(lambda: state.batcher.submit(bundle, req).result())
        for name, secs in ctx.timings.items():
            metrics.stage_latency.observe(secs, stage=name)
        metrics.recommendations.inc(path="cold_start" if ctx.cold_start else "model")
        cat = bundle.catalog
        items = [
            {
                "item_id": bundle.vocab.raw(i),
                "score": s if math.isfinite(s) else 0.0,
                "stage": st,
                "category": cat.category_names[c] if (c := int(cat.category[i])) >= 0 else None,
            }
            for i, s, st in zip(cands.items.tolist(), cands.scores.tolist(), cands.stages, strict=True)
        ]
        body = {
            "user_id": req.user_id,
            "items": items,
            "cold_start": ctx.cold_start,
            "known_user": ctx.known_user,
            "history_length": len(ctx.history.items),
            "context_used": list(ctx.context_used),
            "model": str(bundle.run_dir),
            "timings_ms": {k: round(v * 1e3, 4) for k, v in ctx.timings.items()},
        }
        # RecommendResponse's shape, written directly: FastAPI's validation and serialisation of our own
        # output held the GIL for 11% of the server's GIL time at 150 req/s (py-spy --gil), more than the
        # re-rank stage costs; a test checks the body against the model
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.get("/v1/users/{user_id}/history", response_model=HistoryResponse, tags=["users"])
    def user_history(
        user_id: Annotated[str, PathParam(min_length=1, max_length=256, pattern=_ID)],
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> HistoryResponse | JSONResponse:
        """The user's history as the model reads it: dataset events, then live events (last `limit`)."""
        bundle = ready_bundle()
        live = _store_call(state.store.history, user_id, config.live_history)
        h = bundle.history(user_id, live, details=True)
        if not len(h.items):
            return _error(404, f"unknown user {user_id!r}: no dataset history and no stored events")
        n = len(h.items)
        start = max(0, n - limit)
        events = [
            HistoryEvent(
                item_id=h.raw_items[j],
                event_type=h.event_types[j],
                timestamp=int(h.timestamps[j]),
                source="dataset" if j < h.num_dataset else "live",
                event_id=h.event_ids[j],
                known_to_model=bool(h.items[j] != 0),
            )
            for j in range(start, n)
        ]
        return HistoryResponse(user_id=user_id, known_user=h.num_dataset > 0, total=n, events=events)

    @app.get("/v1/items/{item_id}", response_model=ItemResponse, tags=["items"])
    def item(
        item_id: Annotated[str, PathParam(min_length=1, max_length=256, pattern=_ID)],
    ) -> ItemResponse | JSONResponse:
        """Catalog attributes of an item and whether the current model can recommend it."""
        bundle = ready_bundle()
        idx = bundle.vocab.index(item_id)
        row = bundle.catalog.row(item_id)
        seen = bool(_store_call(state.store.has_item, item_id))
        if idx == 0 and row is None and not seen:
            return _error(404, f"unknown item {item_id!r}")
        return ItemResponse(
            item_id=item_id,
            known_to_model=idx != 0,
            in_catalog=row is not None,
            seen_in_events=seen,
            popularity=int(bundle.popularity[idx]) if idx else 0,
            attributes=jsonable_encoder({k: v for k, v in (row or {}).items() if k != "item_id"}),
        )

    # ---- events ----
    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        tags=["events"],
        responses={
            409: {"model": ConflictResponse, "description": "an event_id reused with another payload: nothing stored"},
            413: {"description": "more than max_batch events"},
            422: {"description": "a field is invalid, e.g. events[2].timestamp unparseable or in the future"},
        },
    )
    def events(batch: EventBatch) -> EventsResponse | JSONResponse:
        """Store a batch durably (fsynced before the reply); the user's next recommendation reads them.

        Idempotent on event_id: an id already stored (or repeated in the batch) with the same user, item,
        type and timestamp is counted in `duplicates`, so a client can retry a batch. An id reused with a
        DIFFERENT payload is a **409** whose `conflicts` list names each one (`events[i].event_id`, what was
        sent, what is stored); the batch is all or nothing, so nothing of it is stored: fix or drop those
        events and resend. Timestamps are read like the data files (epoch seconds or milliseconds, ISO 8601);
        one more than `max_future_skew_s` (config) ahead of the server's clock is a 422 naming the field."""
        if len(batch.events) > config.max_batch:
            return _error(413, f"events: batch of {len(batch.events)} is over the limit of {config.max_batch}")
        seconds, errors = _event_seconds(batch.events, config.max_future_skew_s)
        if errors:
            return _unprocessable(errors)
        evs = [Event(e.event_id, e.user_id, e.item_id, e.event_type, t) for e, t in zip(batch.events, seconds, strict=True)]  # fmt: skip
        res = _store_call(state.store.add, evs)
        if res.conflicts:
            metrics.events_conflict.inc(len(res.conflicts))
            return _conflict_response(res.conflicts, evs)
        metrics.events_ingested.inc(res.stored)
        metrics.events_duplicate.inc(res.duplicates)
        b = state.bundle
        unknown = sum(1 for e in evs if b is None or b.vocab.index(e.item_id) == 0)
        return EventsResponse(stored=res.stored, duplicates=res.duplicates, unknown_items=unknown)

    # ---- admin ----
    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        tags=["admin"],
        responses={401: {"description": "missing or wrong bearer token"}, 403: {"description": "no token configured"}},
    )
    def reload(
        req: ReloadRequest, authorization: Annotated[str | None, Header()] = None
    ) -> ReloadResponse | JSONResponse:
        """Load another bundle and swap it in atomically; requests in flight finish on the old one. Catalog
        updates made with /v1/admin/catalog belong to the old bundle and are not carried over."""
        denied = admin_denied(authorization, "reload", "restart the server on the new bundle")
        if denied is not None:
            return denied
        path = Path(req.path)
        if not (path / "manifest.json").is_file():
            raise RequestError(req.field, f"{req.path!r} is not a bundle (no manifest.json)")
        if not state.reload_lock.acquire(blocking=False):
            return _error(409, "a reload is already in progress")
        try:
            t0 = time.perf_counter()
            try:
                new = ServingModel.load(path, config)
            except Exception as e:  # noqa: BLE001 - a broken run is the caller's input, the old model keeps serving
                metrics.reloads.inc(outcome="failed")
                raise RequestError(req.field, f"cannot load {req.path!r}: {type(e).__name__}: {e}") from None
            old = state.bundle
            state.swap(state.served(new))
            metrics.reloads.inc(outcome="ok")
            previous = str(old.run_dir) if old else None
            return ReloadResponse(
                bundle=str(path),
                previous_bundle=previous,
                run_dir=str(path),
                previous_run_dir=previous,
                stages=[st.name for st in new.stages],
                num_items=new.num_items,
                seconds=time.perf_counter() - t0,
            )
        finally:
            state.reload_lock.release()

    @app.post(
        "/v1/admin/catalog",
        response_model=CatalogResponse,
        tags=["admin"],
        responses={401: {"description": "missing or wrong bearer token"}, 403: {"description": "no token configured"}},
    )
    def catalog(
        req: CatalogRequest, authorization: Annotated[str | None, Header()] = None
    ) -> CatalogResponse | JSONResponse:
        """Add or update catalog items without retraining: a new item's vector comes from its attributes (the
        sequence models' attribute vocabularies in the bundle). The bundle is loaded again with every update so
        far applied and swapped in atomically, as a reload is."""
        denied = admin_denied(authorization, "a catalog update", "update the catalog the bundle is trained on")
        if denied is not None:
            return denied
        ready_bundle()
        try:
            rows = pl.from_dicts(req.items, infer_schema_length=None)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise RequestError("items", f"rows whose columns mix types: {e}") from None
        if not state.reload_lock.acquire(blocking=False):
            return _error(409, "a reload or catalog update is already in progress")
        try:
            t0 = time.perf_counter()
            current = ready_bundle()  # under the lock: the model no other reload or update is replacing
            try:
                updates = merge_rows(current.catalog_updates, rows)
                new = ServingModel.load(current.run_dir, config, catalog_updates=updates)
            except ValueError as e:  # the rows do not fit the bundle: the old model keeps serving
                raise RequestError("items", str(e)) from None
            state.swap(state.served(new))
            ids = rows["item_id"].unique(maintain_order=True).to_list()
            added = [i for i in ids if i not in current.vocab]
            return CatalogResponse(
                added=added, updated=len(ids) - len(added), num_items=new.num_items, seconds=time.perf_counter() - t0
            )
        finally:
            state.reload_lock.release()

    # ---- operations ----
    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        """Model loaded and store reachable (readiness)."""
        b = state.bundle
        store_ok = state.store.ping()
        body = {
            "ready": b is not None and store_ok,
            "model": b.describe() if b else None,
            "load_error": state.load_error,
            "model_process": {
                "state": state.host_state,
                "processes": config.model_processes,
                "restarts": state.host_restarts,
            },
            "store": {
                "url": _redact(state.store.url),
                "ok": store_ok,
                "durable": _durable(state.store) if store_ok else None,
            },
        }
        return JSONResponse(status_code=200 if body["ready"] else 503, content=body)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests, latency per endpoint and stage, events ingested."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimitAndMetrics, state=state)
    return app


def _event_seconds(events: list[EventIn], skew_s: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Unix seconds per event with the data reader's parser (one call for the batch), and the 422 errors:
    unparseable, before 1970, or more than `skew_s` after the server's clock."""
    import polars as pl

    raw = [e.timestamp for e in events]
    if all(type(v) is int and 0 <= v < 1 << 63 for v in raw):
        parsed = integer_seconds(raw)  # what clients send; polars' per-call setup was ~0.7 ms of every post
    else:
        parsed = parse_timestamps(pl.Series("timestamp", [str(v) for v in raw], dtype=pl.Utf8)).to_list()
    latest = time.time() + skew_s
    errors = []
    for i, (v, t) in enumerate(zip(raw, parsed, strict=True)):
        if t is None:
            msg = f"cannot parse {v!r} as a timestamp; expected {TIMESTAMP_FORMATS}"
        elif t < 0:
            msg = f"{v!r} is before 1970-01-01"
        elif t > latest:
            msg = (f"{v!r} is {_utc(t)}, more than {skew_s} s after the server's clock ({_utc(time.time())}; "
                   "max_future_skew_s in the config); check the unit (seconds or milliseconds)")  # fmt: skip
        else:
            continue
        errors.append({"loc": ["body", "events", i, "timestamp"], "msg": msg, "type": "value_error"})
    return [int(t) if t is not None else 0 for t in parsed], errors


def _utc(seconds: float) -> str:
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # past year 9999
        return f"{seconds:.0f} s after 1970"


def _conflict_response(conflicts: tuple[Conflict, ...], sent: list[Event]) -> JSONResponse:
    def payload(e: Event) -> dict[str, Any]:
        return {"user_id": e.user_id, "item_id": e.item_id, "event_type": e.event_type, "timestamp": int(e.timestamp)}

    items = [
        {"field": f"events[{c.index}].event_id", "index": c.index, "event_id": c.event_id,
         "sent": payload(sent[c.index]), "existing": payload(c.existing), "existing_index": c.existing_index}
        for c in conflicts
    ]  # fmt: skip
    where = ", ".join(f"{it['field']} {it['event_id']!r}" for it in items[:5]) + (" ..." if len(items) > 5 else "")
    msg = f"{len(items)} event_id(s) reused with another payload: {where}; nothing of this batch was stored"
    return JSONResponse(status_code=409, content={"error": msg, "conflicts": items[:1000]})


class _NotReady(Exception):
    pass


class _StoreDown(Exception):
    pass


def _store_call(fn: Any, *args: Any) -> Any:
    """Store I/O; a connection failure becomes a 503 rather than a stack trace."""
    import sqlite3

    try:
        return fn(*args)
    except sqlite3.OperationalError as e:
        raise _StoreDown(str(e)) from None
    except Exception as e:
        if type(e).__module__.startswith("redis"):
            raise _StoreDown(str(e)) from None
        raise


def _durable(store: EventStore) -> bool | None:
    """Whether an acknowledged event survives a crash of the store (Redis: AOF with appendfsync always)."""
    try:
        return store.durable()
    except Exception:  # noqa: BLE001 - e.g. CONFIG disabled on a managed Redis: unknown
        return None


def _redact(url: str) -> str:
    """Hide a password in redis://:PASSWORD@host URLs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
