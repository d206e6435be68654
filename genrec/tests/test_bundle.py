"""The bundle format: round trip of the data snapshot, atomic commit, and clear errors for bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.bundle import FORMAT_VERSION, Bundle, BundleError, BundleWriter, fingerprint
from genrec.data.datasets import load_synthetic


@pytest.fixture(scope="module")
def shop():
    return load_synthetic("tiny", seed=3)


def write(path: Path, ds, **metrics) -> Bundle:
    w = BundleWriter(path, ds, command=["test"], data_name="synthetic:tiny")
    w.add_component("lin", "hstu", "retrieval", {"model": {"dim": 4}}, {"w": torch.arange(6.0)}, metrics,
                    extra_files={"extra/table.json": b'{"a": 1}'})  # fmt: skip
    return w.commit()


def test_round_trip_rebuilds_training_indices(tmp_path, shop):
    b = write(tmp_path / "b", shop, ndcg=0.5)
    seq, got = shop.sequences, Bundle.open(tmp_path / "b").sequences()
    assert got.item_vocab.ids == seq.item_vocab.ids and got.user_vocab.ids == seq.user_vocab.ids
    np.testing.assert_array_equal(got.items, seq.items)
    np.testing.assert_array_equal(got.offsets, seq.offsets)
    np.testing.assert_array_equal(got.timestamps, seq.timestamps)
    np.testing.assert_array_equal(got.event_types, seq.event_types)
    assert fingerprint(got) == b.data["fingerprint"] and b.matches(seq)
    assert b.catalog().equals(shop.catalog) and b.users().equals(shop.users)
    c = b.component(role="retrieval")
    assert (c.name, c.kind, c.metrics) == ("lin", "hstu", {"ndcg": 0.5})
    assert torch.equal(b.state_dict(c)["w"], torch.arange(6.0))
    assert b.json(c, "extra/table.json") == {"a": 1}
    assert [s["stage"] for s in b.pipeline] == ["retrieve", "popular", "rerank"]
    m = json.loads((tmp_path / "b/manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION and m["command"] == ["test"] and "histories.parquet" in m["files"]


def test_long_histories_keep_their_last_events(tmp_path):
    from genrec.bundle import HISTORY_LIMIT
    from genrec.data.datasets import Dataset
    from genrec.data.sequences import from_item_lists

    seq = from_item_lists([list(range(1, HISTORY_LIMIT + 51)), [3, 4, 5]], "long")
    got = write(tmp_path / "b", Dataset(seq)).sequences()
    np.testing.assert_array_equal(got.user_items(0), seq.user_items(0)[-HISTORY_LIMIT:])
    np.testing.assert_array_equal(got.user_items(1), [3, 4, 5])
    assert got.timestamps is None and got.event_types is None


def test_commit_into_an_existing_run_folder_keeps_its_other_files(tmp_path, shop):
    (tmp_path / "b").mkdir()
    (tmp_path / "b/last.pt").write_bytes(b"resume")
    write(tmp_path / "b", shop, v=1)
    b = write(tmp_path / "b", shop, v=2)
    assert b.component("lin").metrics == {"v": 2}
    assert (tmp_path / "b/last.pt").read_bytes() == b"resume"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp folder left behind
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]


def test_bundle_errors_name_the_file_and_key(tmp_path, shop):
    write(tmp_path / "b", shop)
    mf = tmp_path / "b/manifest.json"
    good = json.loads(mf.read_text())
    mf.write_text(json.dumps({**good, "format_version": FORMAT_VERSION + 6}))
    with pytest.raises(BundleError, match=r"manifest.json: format_version 7"):
        Bundle.open(tmp_path / "b")
    mf.write_text('{"format": "genrec-bundle", ')
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        Bundle.open(tmp_path / "b")
    mf.write_text(json.dumps(good))
    (tmp_path / "b/components/lin/model.pt").unlink()
    with pytest.raises(BundleError, match=r"components/lin/model.pt: missing .*components.lin.files"):
        Bundle.open(tmp_path / "b")
    shutil.rmtree(tmp_path / "b/components")
    mf.unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing"):
        Bundle.open(tmp_path / "b")


def test_component_lookup_and_corrupt_weights(tmp_path, shop):
    b = write(tmp_path / "b", shop)
    with pytest.raises(BundleError, match=r"no component 'dlrm' .*has: lin \(hstu, retrieval\)"):
        b.component("dlrm")
    with pytest.raises(BundleError, match=r"no ranking component"):
        b.component(role="ranking")
    with pytest.raises(BundleError, match=r"no two-tower retrieval component .*has: lin"):
        b.component(role="retrieval", kinds=("two-tower",))
    assert b.component(kinds=("sasrec", "hstu")).name == "lin"
    (tmp_path / "b/components/lin/model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError, match=r"components/lin/model.pt: unreadable weights"):
        b.state_dict("lin")
