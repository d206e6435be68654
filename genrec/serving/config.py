"""Serving configuration: a TOML or JSON file, every field optional (see docs in each dataclass).

# serving.toml
store = "sqlite:///runs/events.db"
admin_token = "change-me"           # or $GENREC_ADMIN_TOKEN; no token -> /v1/admin/reload is disabled
max_k = 100
max_batch = 1000
max_future_skew_s = 86400           # POST /v1/events rejects timestamps further ahead of the server clock

[rules]                             # optional: replaces the bundle's rerank rules
exclude_seen = true
exclude_purchased = true
exclude_out_of_stock = true
max_per_category = 3
boosts = [{ field = "category", value = "c3", weight = 0.5 }]

[[stages]]                          # optional: replaces the bundle's pipeline; "factory" plugs in your own stage
name = "retrieval"
num_candidates = 300
[[stages]]
name = "popular"
[[stages]]
name = "rerank"
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from genrec.pipeline.core import Boost, RerankRules


class ConfigError(ValueError):
    """A problem in the serving config, naming the file and key."""


# the rules are the pipeline's (genrec/pipeline/core.py); kept importable from here
__all__ = ["Boost", "ConfigError", "RerankRules", "ServeConfig", "load_config"]


@dataclass
class ServeConfig:
    store: str = "sqlite:///genrec-events.db"
    admin_token: str | None = None
    max_k: int = 100  # k in [1, max_k], else 422
    max_batch: int = 1000  # events per POST /v1/events, else 413
    max_body_bytes: int = 4 * 1024 * 1024  # any body over this -> 413 before parsing
    # an event timestamp more than this many seconds after the server's clock is a 422: a wrong unit or a
    # typo (year 5138) would otherwise stay the user's "latest" event forever
    max_future_skew_s: int = 86_400
    live_history: int = 1000  # most recent store events read per request (dataset history is in memory)
    # torch intra-op threads of the pipeline thread (`genrec serve` default: cores / workers - 1, at least 1)
    threads: int = 1
    # threads of the blocking endpoints at once (events, and recommends when max_batch_requests is 1; batched
    # recommends wait on the event loop): one per core. Without batching, more only queued work inside the
    # CPU: on 2 cores, 8 gave p99 55 ms at 200 req/s on ML-1M, 2 gave 8 ms (benchmarks/serving.py).
    max_concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    # requests ranked together by the pipeline thread (genrec/serving/batching.py): whatever is queued when
    # it becomes free, up to this many; 1 runs each request on its own thread
    max_batch_requests: int = 32
    # the GIL hand-over interval of the process: the pipeline thread gets the GIL back sooner between its
    # torch ops while request threads parse JSON. On ML-1M at 100 req/s, p50 56 -> 30 ms for 5 -> 0.5 ms.
    switch_interval_ms: float = 0.5
    # child processes that run the stages (the models), HTTP / store / contexts staying in the server
    # process: more cores than one GIL allows (genrec/serving/model_process.py); 0 runs them in process.
    # `genrec serve` picks it from the cores per worker when neither the flag nor the config file sets it
    model_processes: int = 0
    dataset_history: bool = True  # seed known users' history from the bundle's histories
    rules: RerankRules | None = None  # None: the bundle's rerank rules (its pipeline's rerank spec)
    stages: list[dict[str, Any]] | None = None  # None: the bundle's pipeline (manifest["pipeline"])

    def __post_init__(self) -> None:
        if self.admin_token is None:
            self.admin_token = os.environ.get("GENREC_ADMIN_TOKEN") or None

    def validate(self, where: str = "config") -> ServeConfig:
        """Types and ranges of every key: a ConfigError naming `where` (the file) and the key, at start-up
        rather than a 500 on the first request that reads it."""
        _check_types(self, where)
        positive = ("max_k", "max_batch", "max_body_bytes", "live_history", "threads", "max_concurrency")
        for name in (*positive, "max_batch_requests"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name} must be a positive integer, got {getattr(self, name)}")
        if self.model_processes < 0:
            raise ConfigError(f"{where}: model_processes must be >= 0, got {self.model_processes}")
        if not 0 < self.switch_interval_ms <= 1000:
            raise ConfigError(f"{where}: switch_interval_ms must be in (0, 1000], got {self.switch_interval_ms}")
        if self.max_future_skew_s < 0:
            raise ConfigError(f"{where}: max_future_skew_s must be >= 0, got {self.max_future_skew_s}")
        if self.admin_token is not None and not self.admin_token.strip():
            raise ConfigError(f"{where}: admin_token must not be blank (leave it out to disable admin endpoints)")
        mpc = self.rules.max_per_category if self.rules is not None else None
        if mpc is not None and mpc < 1:
            raise ConfigError(f"{where}: rules.max_per_category must be a positive integer, got {mpc}")
        return self


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list and typing.get_args(tp):
        return f"a list of {_PLURAL.get(typing.get_args(tp)[0], 'tables')}"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list", dict: "a table"}
    origin = typing.get_origin(tp) or tp
    return names.get(origin, getattr(origin, "__name__", str(origin)))


_PLURAL = {str: "strings", int: "integers", float: "numbers", bool: "true/false values"}


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, val) for k, v in value.items())
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)  # true is not 1 in a config
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return isinstance(value, tp)
    return isinstance(value, tp)


def _check_types(obj: Any, where: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, tp, key = getattr(obj, f.name), hints[f.name], f"{prefix}{f.name}"
        if hasattr(value, "__dataclass_fields__"):
            _check_types(value, where, f"{key}.")
        elif isinstance(value, list) and value and all(hasattr(v, "__dataclass_fields__") for v in value):
            for i, v in enumerate(value):
                _check_types(v, where, f"{key}[{i}].")
        elif not _matches(value, tp):
            raise ConfigError(f"{where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r:.60}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(known)}")
    kw = dict(data)
    if cls is ServeConfig and "rules" in kw:
        if not isinstance(kw["rules"], dict):
            raise ConfigError(f"{where}: 'rules' must be a table")
        kw["rules"] = _build(RerankRules, kw["rules"], f"{where}, rules")
    if cls is RerankRules and "boosts" in kw:
        boosts = kw["boosts"]
        if not isinstance(boosts, list) or not all(isinstance(b, dict) for b in boosts):
            raise ConfigError(f"{where}, boosts: expected a list of {{field, value, weight}} tables")
        kw["boosts"] = [_build(Boost, b, f"{where}, boosts[{i}]") for i, b in enumerate(boosts)]
    if cls is ServeConfig and "stages" in kw:
        st = kw["stages"]
        if not isinstance(st, list) or not all(isinstance(s, dict) and ("name" in s or "stage" in s) for s in st):
            raise ConfigError(f"{where}, stages: expected a list of tables with a 'name' or a 'stage'")
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> ServeConfig:
    """Config from a .toml / .json file (or defaults), then non-None keyword overrides (CLI flags)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{p}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a table of settings at the top level")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _build(ServeConfig, data, str(path or "config")).validate(str(path or "config"))
