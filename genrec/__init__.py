"""genrec: a generative recommendation engine (HSTU, SASRec) for e-commerce personalization.

Importing genrec imports nothing else: the CLI's startup time depends on it (`genrec --help` in well under 1.5 s).
"""

from __future__ import annotations

__version__ = "0.1.0"

# The TorchRec stack (sharded tables, EmbeddingBagCollections: the ranking models, two-tower, scale-out) is optional:
# torchrec's own requirements pull a CUDA build of fbgemm, so its wheel is installed with --no-deps.
TORCHREC_MODULES = frozenset({"torchrec", "fbgemm_gpu", "tensordict", "torchmetrics", "pyre_extensions"})
TORCHREC_INSTALL = (
    "scripts/setup.sh, or in the checkout: pip install '.[torchrec]' && pip install --no-deps torchrec==1.8.0"
)


def missing_dependency(e: ImportError) -> str | None:
    """One line saying how to install an optional package that an import did not find; None for other errors."""
    name = (getattr(e, "name", None) or "").partition(".")[0]
    if isinstance(e, ModuleNotFoundError) and name in TORCHREC_MODULES:
        return f"this needs TorchRec ({name} is not installed); install it with {TORCHREC_INSTALL}"
    return None
