"""Sequential recommenders and their presets.

build_model("hstu", num_items=3416, max_len=200)      -> HSTU with the ML-1M reference settings
model_from_config(model.config.to_dict())             -> same architecture, e.g. when loading a run
"""

from __future__ import annotations

from typing import Any

from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.models.sequential import SequentialConfig, SequentialModel

# ML-1M reference settings (Zhai et al. 2024): length 200, d=50; hstu 2 layers/1 head, large 8 layers/2 heads.
PRESETS: dict[str, tuple[type[SequentialModel], type[SequentialConfig], dict[str, Any]]] = {
    "sasrec": (SASRec, SASRecConfig, {"num_layers": 2, "num_heads": 1}),
    "hstu": (HSTU, HSTUConfig, {"num_layers": 2, "num_heads": 1}),
    "hstu-large": (HSTU, HSTUConfig, {"num_layers": 8, "num_heads": 2, "qk_dim": 25, "v_dim": 25}),
}
_KINDS = {"HSTUConfig": (HSTU, HSTUConfig), "SASRecConfig": (SASRec, SASRecConfig)}


def build_model(name: str, num_items: int, **overrides: Any) -> SequentialModel:
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(PRESETS)}")
    model_cls, cfg_cls, preset = PRESETS[name]
    kwargs = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    # Per-head widths follow a changed width or head count (dim // heads) unless given explicitly.
    reshaped = kwargs.get("num_heads", 1) != preset["num_heads"] or overrides.get("dim") is not None
    if cfg_cls is HSTUConfig and reshaped and "qk_dim" not in overrides:
        kwargs.pop("qk_dim", None), kwargs.pop("v_dim", None)
    return model_cls(cfg_cls(num_items=num_items, **kwargs))


def model_from_config(cfg: dict[str, Any]) -> SequentialModel:
    cfg = dict(cfg)
    if cfg.get("kind") == "EnsembleConfig":
        from genrec.models.ensemble import Ensemble, EnsembleConfig

        cfg.pop("kind")
        return Ensemble(EnsembleConfig(**cfg))
    model_cls, cfg_cls = _KINDS[cfg.pop("kind")]
    return model_cls(cfg_cls(**cfg))


__all__ = [
    "HSTU",
    "HSTUConfig",
    "PRESETS",
    "SASRec",
    "SASRecConfig",
    "SequentialModel",
    "build_model",
    "model_from_config",
]
