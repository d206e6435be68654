"""Serving configuration: a TOML or JSON file, every field optional (see docs in each dataclass).

# serving.toml
store = "sqlite:///runs/events.db"
admin_token = "change-me"           # or $GENREC_ADMIN_TOKEN; no token -> /v1/admin/reload is disabled
max_k = 100
max_batch = 1000

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
    live_history: int = 1000  # most recent store events read per request (dataset history is in memory)
    threads: int = 1  # torch intra-op threads: requests already run in parallel threads
    # requests computed at once (thread pool size): one per core. More only queues work inside the CPU: on
    # 2 cores, 8 gave p99 55 ms at 200 req/s on ML-1M, 2 gave 8 ms (benchmarks/serving.py).
    max_concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    dataset_history: bool = True  # seed known users' history from the bundle's histories
    rules: RerankRules | None = None  # None: the bundle's rerank rules (its pipeline's rerank spec)
    stages: list[dict[str, Any]] | None = None  # None: the bundle's pipeline (manifest["pipeline"])

    def __post_init__(self) -> None:
        if self.admin_token is None:
            self.admin_token = os.environ.get("GENREC_ADMIN_TOKEN") or None


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
    cfg = _build(ServeConfig, data, str(path or "config"))
    for name in ("max_k", "max_batch", "max_body_bytes", "live_history", "threads", "max_concurrency"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ConfigError(f"{path or 'config'}: {name} must be a positive integer")
    return cfg
