"""The bundle: one self-contained folder for everything genrec trains, written and read only here.

BUNDLE/
    manifest.json          table of contents, written last: format, format_version, created, genrec_version,
                           command, data {name, fingerprint, summary}, files, components, pipeline, metrics
    vocab.json             item / user / event-type vocabularies: the training indices
    histories.parquet      training users' events (user_id, item_id, timestamp, event_type), each user's last
                           HISTORY_LIMIT tokens, in training order: seeds serving and rebuilds the split
    catalog.parquet        the catalog snapshot trained with (optional)
    users.parquet          the user attribute snapshot (optional)
    components/<name>/     one trained thing: model.pt (torch.save of a state dict, loaded weights_only=True)
                           and its own extra files (feature tables as .npz + .json, a faiss index, ...);
                           a sequence model with item attributes has attributes.json, the attribute
                           vocabularies that give an item added after training its vector

Nothing here reads the training data: a bundle loads from any working directory, after `cp -r` or `tar` to
another host, with the dataset gone. Anything wrong with a bundle is a BundleError naming the file and key.
The data fingerprint (sha256 over the training sequences and vocabularies) tells whether a dataset is the
one a bundle was trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from genrec.data.sequences import PAD, SequenceData, Vocab

if TYPE_CHECKING:
    from genrec.data.datasets import Dataset
    from genrec.models import SequentialModel
    from genrec.models.hstu_ranker import HSTURanker

FORMAT = "genrec-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# tokens kept per user: ML-1M's longest user (2,314) fits whole, so seen-item exclusion and history-length features
# match training; a longer history keeps its most recent tokens (>= any model's window)
HISTORY_LIMIT = 10_000
ROLES = ("retrieval", "ranking")
SEQUENTIAL_KINDS = ("sasrec", "hstu", "hstu-large", "ensemble")
KINDS = (*SEQUENTIAL_KINDS, "two-tower", "dlrm", "wide-deep", "lr", "hstu-ranker")
# a sequence model's attribute tokenizer (genrec.features.tables.AttributeTokenizer.to_dict), in its component
ATTRIBUTES_FILE = "attributes.json"
DATA_FILES = ("vocab.json", "histories.parquet", "catalog.parquet", "users.parquet")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class BundleError(ValueError):
    """A bundle that cannot be read: the message names the file and the key."""


# ---- small file helpers (every writer in genrec uses these) -------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: a kill never leaves a torn checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz file's content (for add_component's extra_files); read back with allow_pickle=False."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


def fingerprint(seq: SequenceData) -> str:
    """sha256 over the training sequences (items, offsets, timestamps, event types) and the vocabularies."""
    h = hashlib.sha256()
    for arr in (seq.items, seq.offsets, seq.timestamps, seq.event_types):
        h.update(b"-" if arr is None else np.ascontiguousarray(arr, np.int64).tobytes())
    vocabs = [seq.item_vocab.ids, seq.user_vocab.ids, seq.event_vocab.ids if seq.event_vocab else None]
    h.update(json.dumps(vocabs).encode())
    return "sha256:" + h.hexdigest()


# ---- reading ---------------------------------------------------------------------------------------


@dataclass
class Component:
    """One trained thing inside a bundle."""

    name: str  # "hstu", "two-tower", "wide-deep", "genrank", ...
    kind: str  # one of KINDS
    role: str  # "retrieval" | "ranking"
    path: Path  # its folder inside the bundle (components/<name>/)
    config: dict[str, Any]  # everything needed to rebuild the module
    metrics: dict[str, Any]  # its own test / valid metrics
    files: list[str] = field(default_factory=list)  # paths relative to `path`

    def file(self, name: str) -> Path:
        """A file of this component; BundleError when the manifest does not list it."""
        if name not in self.files:
            raise BundleError(
                f"{self.path / name}: not in the bundle (manifest.json components.{self.name}.files: {self.files})"
            )
        return self.path / name


class Bundle:
    """A bundle folder, validated on open; side tables are read lazily and cached."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path, self.manifest = path, manifest
        self.components: dict[str, Component] = {
            name: Component(
                name=name,
                kind=c["kind"],
                role=c["role"],
                path=path / c["path"],
                config=c["config"],
                metrics=c["metrics"],
                files=list(c["files"]),
            )
            for name, c in manifest["components"].items()
        }

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        path = Path(path)
        mf = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"{path}: no such bundle folder")
        if not mf.is_file():
            raise BundleError(f"{mf}: missing (not a genrec bundle, or one whose training did not finish)")
        try:
            manifest = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mf}: not valid JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{mf}: expected a JSON object")
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{mf}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{mf}: format_version {version!r} is not readable by this genrec (it reads {FORMAT_VERSION}); "
                "retrain the bundle or use the genrec version that wrote it"
            )
        for key, typ in (("data", dict), ("files", list), ("components", dict), ("pipeline", list)):
            if not isinstance(manifest.get(key), typ):
                raise BundleError(f"{mf}: key {key!r} missing or not a {typ.__name__}")
        for f in manifest["files"]:
            if not (path / f).is_file():
                raise BundleError(f"{path / f}: missing (listed in {mf} files)")
        for name, c in manifest["components"].items():
            if not isinstance(c, dict):
                raise BundleError(f"{mf}: components.{name} is not an object")
            for key in ("kind", "role", "path", "files", "config", "metrics"):
                if key not in c:
                    raise BundleError(f"{mf}: components.{name}.{key} missing")
            if c["path"] != f"components/{name}" or not _NAME.match(str(name)):
                raise BundleError(f"{mf}: components.{name}.path must be 'components/{name}', not {c['path']!r}")
            if c["role"] not in ROLES:
                raise BundleError(f"{mf}: components.{name}.role {c['role']!r}, expected one of {ROLES}")
            for f in c["files"]:
                if not (path / c["path"] / f).is_file():
                    raise BundleError(f"{path / c['path'] / f}: missing (listed in {mf} components.{name}.files)")
        return cls(path, manifest)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, components={list(self.components)})"

    # ---- manifest views ----
    @property
    def pipeline(self) -> list[dict[str, Any]]:
        return self.manifest["pipeline"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def data(self) -> dict[str, Any]:
        """{name, fingerprint, summary} of the training data."""
        return self.manifest["data"]

    def component(
        self, name: str | None = None, role: str | None = None, kinds: tuple[str, ...] | None = None
    ) -> Component:
        """The component called `name`, else the first one with `role` (and a kind in `kinds`); BundleError
        naming what exists."""
        have = ", ".join(f"{n} ({c.kind}, {c.role})" for n, c in self.components.items()) or "none"
        if name is not None:
            if name not in self.components:
                raise BundleError(f"{self.path / MANIFEST}: no component {name!r} in components (has: {have})")
            comp = self.components[name]
            if role is not None and comp.role != role:
                raise BundleError(f"{self.path / MANIFEST}: components.{name} is a {comp.role} component, not {role}")
            return comp
        found = [c for c in self.components.values() if role in (None, c.role) and (kinds is None or c.kind in kinds)]
        if not found:
            what = " ".join(x for x in ("/".join(kinds) if kinds else "", role or "") if x)
            raise BundleError(f"{self.path / MANIFEST}: no {what} component in components (has: {have})")
        return found[0]

    def matches(self, seq: SequenceData) -> bool:
        """Whether `seq` is the data this bundle was trained on (same fingerprint)."""
        return self.data.get("fingerprint") == fingerprint(seq)

    # ---- data snapshot ----
    def _file(self, name: str) -> Path | None:
        return self.path / name if name in self.manifest["files"] else None

    @cached_property
    def _vocabs(self) -> tuple[Vocab | None, Vocab | None, Vocab | None]:
        p = self._file("vocab.json")
        if p is None:
            return None, None, None
        try:
            payload = json.loads(p.read_text())
            ev = payload.get("events")
            return Vocab(payload["items"]), Vocab(payload["users"]), Vocab(ev) if ev else None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{p}: unreadable vocabularies ({type(e).__name__}: {e})") from None

    @property
    def item_vocab(self) -> Vocab | None:
        return self._vocabs[0]

    @property
    def user_vocab(self) -> Vocab | None:
        return self._vocabs[1]

    @property
    def event_vocab(self) -> Vocab | None:
        return self._vocabs[2]

    def _parquet(self, name: str) -> pl.DataFrame | None:
        p = self._file(name)
        if p is None:
            return None
        try:
            return pl.read_parquet(p)
        except Exception as e:  # polars raises several error types for a damaged file
            raise BundleError(f"{p}: unreadable Parquet ({type(e).__name__}: {e})") from None

    def catalog(self) -> pl.DataFrame | None:
        return self._parquet("catalog.parquet")

    def users(self) -> pl.DataFrame | None:
        return self._parquet("users.parquet")

    def sequences(self) -> SequenceData:
        """The training users' histories, re-indexed with the bundle vocabularies (the training indices)."""
        return self._sequences

    @cached_property
    def _sequences(self) -> SequenceData:
        items_v, users_v, events_v = self._vocabs
        df = self._parquet("histories.parquet")
        if df is None or items_v is None or users_v is None:
            raise BundleError(f"{self.path / MANIFEST}: files has no histories.parquet / vocab.json")
        p = self.path / "histories.parquet"
        try:
            u = df["user_id"].replace_strict(users_v._index, return_dtype=pl.Int64).to_numpy() - 1
            it = df["item_id"].replace_strict(items_v._index, return_dtype=pl.Int64).to_numpy()
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ColumnNotFoundError) as e:
            raise BundleError(f"{p}: user_id / item_id do not match vocab.json ({e})") from None
        order = np.argsort(u, kind="stable")  # rows are grouped by user already; keep their order
        summary = self.data.get("summary", {})
        ts = df["timestamp"].fill_null(0).to_numpy()[order].astype(np.int64) if summary.get("has_timestamps") else None
        ev = None
        if events_v is not None:
            ev = df["event_type"].replace_strict(events_v._index, default=PAD, return_dtype=pl.Int64).to_numpy()[order]
        offsets = np.zeros(len(users_v) + 1, np.int64)
        np.cumsum(np.bincount(u, minlength=len(users_v)), out=offsets[1:])
        return SequenceData(
            items=it[order].astype(np.int64),
            offsets=offsets,
            item_vocab=items_v,
            user_vocab=users_v,
            timestamps=ts,
            event_types=ev,
            event_vocab=events_v,
            name=str(summary.get("name", self.data.get("name", "custom"))),
        )

    # ---- component files ----
    def state_dict(self, component: Component | str, file: str = "model.pt") -> dict[str, Any]:
        comp = self.component(component) if isinstance(component, str) else component
        p = comp.file(file)
        try:
            return load_checkpoint(p)
        except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
            raise BundleError(f"{p}: unreadable weights ({type(e).__name__}: {e})") from None

    def arrays(self, component: Component | str, file: str) -> dict[str, np.ndarray]:
        comp = self.component(component) if isinstance(component, str) else component
        p = comp.file(file)
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            raise BundleError(f"{p}: unreadable arrays ({type(e).__name__}: {e})") from None

    def json(self, component: Component | str, file: str) -> Any:
        comp = self.component(component) if isinstance(component, str) else component
        p = comp.file(file)
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{p}: not valid JSON ({e})") from None


def open_bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def load_sequential(bundle: Bundle | str | Path, name: str | None = None) -> SequentialModel:
    """A sequence model (SASRec / HSTU) component, in eval mode; the first one by default."""
    from genrec.models import model_from_config

    b = open_bundle(bundle)
    comp = b.component(name, kinds=None if name else SEQUENTIAL_KINDS)
    if comp.kind not in SEQUENTIAL_KINDS:
        raise BundleError(
            f"{b.path / MANIFEST}: components.{comp.name}.kind is {comp.kind!r}, not a sequence model "
            f"({', '.join(SEQUENTIAL_KINDS)})"
        )
    try:
        model = model_from_config(comp.config["model"])
        model.load_state_dict(b.state_dict(comp))
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # ValueError: an ensemble's members disagree
        raise BundleError(f"{comp.path}: weights do not fit components.{comp.name}.config.model ({e})") from None
    return model.eval()


def load_attribute_tokenizer(bundle: Bundle | str | Path, name: str | None = None) -> Any:
    """The AttributeTokenizer of a sequence-model component trained with item attributes, else None."""
    from genrec.features.tables import AttributeTokenizer

    b = open_bundle(bundle)
    comp = b.component(name, kinds=None if name else SEQUENTIAL_KINDS)
    if ATTRIBUTES_FILE not in comp.files:
        return None
    payload = b.json(comp, ATTRIBUTES_FILE)
    try:
        return AttributeTokenizer.from_dict(payload)
    except (KeyError, TypeError) as e:
        raise BundleError(
            f"{comp.path / ATTRIBUTES_FILE}: not an attribute tokenizer ({type(e).__name__}: {e})"
        ) from None


def load_hstu_ranker(bundle: Bundle | str | Path, name: str | None = None) -> tuple[HSTURanker, dict[str, Any]]:
    """The HSTU ranker of a bundle (path or Bundle) in eval mode, and its component config (+ "test" metrics)."""
    from genrec.models.hstu_ranker import HSTURanker, HSTURankerConfig

    b = open_bundle(bundle)
    comp = b.component(name) if name else next((c for c in b.components.values() if c.kind == "hstu-ranker"), None)
    if comp is None or comp.kind != "hstu-ranker":
        raise BundleError(f"{b.path}/manifest.json: no hstu-ranker component (train one with `genrec genrank train`)")
    try:
        model = HSTURanker(HSTURankerConfig.from_dict(comp.config["model"]))
        model.load_state_dict(b.state_dict(comp))
    except (KeyError, TypeError, RuntimeError) as e:
        raise BundleError(f"{comp.path}: weights do not fit components.{comp.name}.config.model ({e})") from None
    return model.eval(), {**comp.config, "test": comp.metrics}


# ---- writing ---------------------------------------------------------------------------------------


def default_pipeline(components: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every retriever, popularity backfill, every ranker, the shop rules."""
    specs: list[dict[str, Any]] = []
    for name, c in components.items():
        if c["role"] == "retrieval":
            spec = {"stage": "retrieve", "component": name, "k": 200}
            if c["kind"] != "two-tower":
                spec["index"] = "exact"
            specs.append(spec)
    specs.append({"stage": "popular", "fill_factor": 3})
    specs += [{"stage": "rank", "component": n} for n, c in components.items() if c["role"] == "ranking"]
    specs.append({"stage": "rerank", "exclude_seen": True, "exclude_out_of_stock": True})
    return specs


def _genrec_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genrec")
    except PackageNotFoundError:
        return "unknown"


def _histories(seq: SequenceData, limit: int = HISTORY_LIMIT) -> pl.DataFrame:
    lengths = seq.lengths
    user = np.repeat(np.arange(seq.num_users), lengths)
    pos = np.arange(len(seq.items)) - np.repeat(seq.offsets[:-1], lengths)
    keep = pos >= np.repeat(lengths, lengths) - limit
    users = np.array(seq.user_vocab.ids, dtype=object)
    items = np.array([""] + seq.item_vocab.ids, dtype=object)
    cols: dict[str, Any] = {
        "user_id": pl.Series(users[user[keep]], dtype=pl.Utf8),
        "item_id": pl.Series(items[seq.items[keep]], dtype=pl.Utf8),
        "timestamp": pl.Series(seq.timestamps[keep] if seq.timestamps is not None else [None] * int(keep.sum()),
                               dtype=pl.Int64),
    }  # fmt: skip
    if seq.event_types is not None and seq.event_vocab is not None:
        events = np.array([""] + seq.event_vocab.ids, dtype=object)
        cols["event_type"] = pl.Series(events[seq.event_types[keep]], dtype=pl.Utf8)
    else:
        cols["event_type"] = pl.Series([None] * int(keep.sum()), dtype=pl.Utf8)
    return pl.DataFrame(cols)


class BundleWriter:
    """Writes a bundle into a temp folder beside `path`; commit() writes the manifest last and installs it.

    A folder that already exists (a resumable training run, an older bundle) keeps its other files; its
    manifest is removed first and replaced last, so a kill mid-commit leaves no bundle rather than a mix.
    dataset None: a bundle without data snapshot (a ranker trained on its own action data).
    """

    def __init__(
        self, path: str | Path, dataset: Dataset | None, command: list[str] | None = None, data_name: str = ""
    ) -> None:
        self.path = Path(path)
        self.dataset, self.data_name = dataset, data_name
        self.command = list(sys.argv) if command is None else list(command)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "components").mkdir(parents=True)
        self.components: dict[str, dict[str, Any]] = {}
        self.pipeline: list[dict[str, Any]] | None = None
        self.metrics: dict[str, Any] = {}

    def add_component(
        self,
        name: str,
        kind: str,
        role: str,
        config: dict[str, Any],
        state_dict: dict[str, Any] | None,
        metrics: dict[str, Any],
        extra_files: dict[str, bytes | Path] | None = None,
    ) -> None:
        if not _NAME.match(name) or name in self.components:
            raise BundleError(f"component name {name!r}: must be new and made of letters, digits, '_', '-', '.'")
        if kind not in KINDS or role not in ROLES:
            raise BundleError(f"components.{name}: kind {kind!r} / role {role!r} (kinds {KINDS}, roles {ROLES})")
        folder = self.tmp / "components" / name
        folder.mkdir(parents=True)
        if state_dict is not None:
            atomic_save(state_dict, folder / "model.pt")
        for fname, content in (extra_files or {}).items():
            dst = folder / fname
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dst.write_bytes(content)
            elif Path(content).is_dir():
                shutil.copytree(content, dst)
            else:
                shutil.copyfile(content, dst)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        json.dumps(config)  # fail here, not at commit, on a config that is not JSON
        self.components[name] = {"kind": kind, "role": role, "path": f"components/{name}", "files": files,
                                 "config": config, "metrics": metrics}  # fmt: skip

    def copy_component(self, source: Bundle, name: str, as_name: str | None = None) -> None:
        """Another bundle's component, files and all (e.g. the retrievers a ranker was trained on)."""
        comp = source.component(name)
        new = as_name or name
        if not _NAME.match(new) or new in self.components:
            raise BundleError(f"component name {new!r}: must be new and made of letters, digits, '_', '-', '.'")
        shutil.copytree(comp.path, self.tmp / "components" / new)
        self.components[new] = {"kind": comp.kind, "role": comp.role, "path": f"components/{new}",
                                "files": list(comp.files), "config": comp.config, "metrics": comp.metrics}  # fmt: skip

    def set_pipeline(self, specs: list[dict[str, Any]]) -> None:
        self.pipeline = [dict(s) for s in specs]

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        self.metrics = dict(metrics)

    def _write_data(self) -> tuple[list[str], dict[str, Any]]:
        ds = self.dataset
        if ds is None:
            return [], {"name": self.data_name, "fingerprint": None, "summary": {}}
        seq = ds.sequences
        files = ["vocab.json", "histories.parquet"]
        vocab = {"name": seq.name, "items": seq.item_vocab.ids, "users": seq.user_vocab.ids,
                 "events": seq.event_vocab.ids if seq.event_vocab else None}  # fmt: skip
        (self.tmp / "vocab.json").write_text(json.dumps(vocab))
        _histories(seq).write_parquet(self.tmp / "histories.parquet")
        for name, df in (("catalog.parquet", ds.catalog), ("users.parquet", ds.users)):
            if df is not None:
                df.write_parquet(self.tmp / name)
                files.append(name)
        data = {"name": self.data_name or seq.name, "fingerprint": fingerprint(seq), "summary": seq.summary()}
        return files, data

    def commit(self) -> Bundle:
        files, data = self._write_data()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "genrec_version": _genrec_version(),
            "command": self.command,
            "data": data,
            "files": files,
            "components": self.components,
            "pipeline": self.pipeline if self.pipeline is not None else default_pipeline(self.components),
            "metrics": self.metrics,
        }
        with open(self.tmp / MANIFEST, "w") as f:  # last file written
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        self._install()
        return Bundle.open(self.path)

    def _install(self) -> None:
        path, tmp = self.path, self.tmp
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, path)  # one atomic step
            return
        if not path.is_dir():
            raise BundleError(f"{path}: exists and is not a folder")
        (path / MANIFEST).unlink(missing_ok=True)  # from here until the manifest lands, the folder is no bundle
        for name in (*DATA_FILES, "components"):
            src, dst, old = tmp / name, path / name, path / f".{name}.old"
            if old.is_dir():
                shutil.rmtree(old)
            if dst.exists():
                dst.rename(old)
            if src.exists():
                src.rename(dst)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        os.replace(tmp / MANIFEST, path / MANIFEST)
        shutil.rmtree(tmp)


__all__ = [
    "ATTRIBUTES_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "BundleWriter",
    "Component",
    "atomic_save",
    "fingerprint",
    "load_checkpoint",
    "load_attribute_tokenizer",
    "load_hstu_ranker",
    "load_sequential",
    "write_json",
]
