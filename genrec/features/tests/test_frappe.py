import gzip
from pathlib import Path

import numpy as np
import pytest

from genrec.data.datasets import data_dir
from genrec.data.io import DataError
from genrec.features.frappe import FIELDS, SPARSE, load_frappe, read_frappe

FOLDER = data_dir() / "frappe-partial"
needs_data = pytest.mark.skipif(
    not (FOLDER / "frappe.test.libfm.gz").exists(), reason="frappe-partial not in $GENREC_DATA_DIR"
)


def _line(label: str, local: list[int]) -> str:
    return " ".join([label, *(f"{first + v}:1" for (_, first, _), v in zip(FIELDS, local, strict=True))])


def test_read_frappe_fields_labels_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "f.libfm.gz"
    with gzip.open(path, "wt") as f:
        f.write(_line("1", [3, 0, 6, 1, 1, 2, 0, 8, 79, 232]) + "\n\n" + _line("-1", [0] * 10) + "\n")
    labels, values = read_frappe(path)
    assert labels.tolist() == [1.0, 0.0]
    assert values.tolist() == [[3, 0, 6, 1, 1, 2, 0, 8, 79, 232], [0] * 10]
    bad = tmp_path / "bad.libfm"
    good = _line("1", [0] * 10)
    for text, match in [
        (good + "\n" + good.replace("957:1", "5040:1"), r"line 2.*item.*\[957, 5039\)"),  # a daytime index as item
        (good.replace("1 ", "2 ", 1), "label must be 1 or -1"),
        (good.rsplit(" ", 1)[0], "found 10"),
        (good.replace("957:1", "957:2"), "item"),
    ]:
        bad.write_text(text + "\n")
        with pytest.raises(DataError, match=match) as err:
            read_frappe(bad)
        assert "bad.libfm" in str(err.value)
    with pytest.raises(FileNotFoundError, match="GENREC_DATA_DIR"):
        read_frappe(tmp_path / "missing.libfm.gz")


@needs_data
def test_load_frappe_splits_and_training_only_vocabularies() -> None:
    d = load_frappe(data_dir())
    assert (len(d.train), len(d.dev), len(d.test)) == (46_178, 11_544, 28_860)
    assert int(d.train.labels.sum() + d.dev.labels.sum()) == 19_063 and int(d.test.labels.sum()) == 9_536
    assert [t.features[0] for t in d.schema.tables] == SPARSE and d.schema.dense == []
    for rows in (d.train, d.dev, d.test):
        assert rows.dense.shape == (len(rows), 0) and rows.sparse.keys == SPARSE
        for t in d.schema.tables:
            ids = rows.sparse.values[t.features[0]]
            assert ids.min() >= 0 and ids.max() < t.num_embeddings
    assert (d.train.sparse.values["user"] > 0).all()  # every training value has an id; 0 = unseen in train
    assert (d.test.sparse.values["user"] == 0).any()  # test users absent from the train part share bucket 0
    assert "frappe.test.libfm" in d.protocol["test"]


def test_load_frappe_cuts_the_pool_by_seed_and_encodes_with_train_values_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "frappe-partial"
    folder.mkdir()
    for name, n in (("validation", 50), ("test", 20)):
        with gzip.open(folder / f"frappe.{name}.libfm.gz", "wt") as f:
            for r in range(n):
                local = [int(rng.integers(0, size)) for _, _, size in FIELDS]
                local[0] = r if name == "validation" else 900 + r  # test users never appear in the pool
                f.write(_line(str(rng.choice(["1", "-1"])), local) + "\n")
    d = load_frappe(tmp_path, dev_fraction=0.2)
    assert (len(d.train), len(d.dev), len(d.test)) == (40, 10, 20)
    assert d.schema.tables[0].num_embeddings == 41  # the 40 training users + the reserved bucket
    assert (d.dev.sparse.values["user"] == 0).all() and (d.test.sparse.values["user"] == 0).all()
    other = load_frappe(tmp_path, dev_fraction=0.2, split_seed=1)
    assert not np.array_equal(other.train.labels, d.train.labels)  # another seed, another cut
    with pytest.raises(ValueError, match="dev_fraction"):
        load_frappe(tmp_path, dev_fraction=1.0)
