"""Own-log benchmark: a shop's raw order-line export against the same events as clean files.

genrec's synthetic shop is written twice:

    clean    events.csv (user_id, item_id, timestamp, event_type) + catalog.csv (item_id, title, category,
             brand, price): genrec's own names, what a data engineer would prepare
    export   orders.csv as a shop system exports order lines (UCI Online Retail's layout): Invoice, StockCode,
             Description, Category, Brand, Price, Action, Date as month/day/year text, Customer ID; guest
             checkouts (5% more rows) have no Customer ID; no catalog file: the product columns on every row
             are the catalog

and each is trained with the same command, `genrec train --model hstu --item-attributes` (+ `--drop-incomplete`
for the export, the only flag it needs: its columns, date format and catalog are read from the file). The
export's guest rows are dropped and counted, so both runs see the same events; the test split (each user's last
event, full catalog, seen items excluded, fit: train) is scored once per run. The same export is also written as
an Excel workbook (a sheet per year, as Online Retail II ships) and read back: same sequences.

    python benchmarks/own_log_export.py                  # synthetic:small, 20 epochs, 1 thread (~4 min)
    python benchmarks/own_log_export.py --size tiny --epochs 2

Writes benchmarks/results/own_log_export.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.datasets import load_path
from genrec.data.io import ReadOptions
from genrec.data.synthetic import generate_shop, shop_config

RESULTS = Path(__file__).resolve().parent / "results"
PRODUCT = ["title", "category", "brand", "price"]


def write_clean(shop, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shop.events.select("user_id", "item_id", "timestamp", "event_type").write_csv(folder / "events.csv")
    shop.catalog.select("item_id", *PRODUCT).write_csv(folder / "catalog.csv")
    return folder / "events.csv"


def export_rows(shop, seed: int, guest_share: float = 0.05) -> pl.DataFrame:
    """The events as order lines with the product's columns on each row, plus guest rows without a customer."""
    rng = np.random.default_rng(seed)
    ev = shop.events.with_row_index("n")
    guests = ev.sample(fraction=guest_share, seed=seed).with_columns(
        pl.lit(None, pl.Utf8).alias("user_id"), pl.col("n").cast(pl.Float64) + 0.5
    )  # a guest's row lands right after the row it copies
    rows = pl.concat([ev.with_columns(pl.col("n").cast(pl.Float64)), guests]).sort("n")
    rows = rows.join(shop.catalog.select("item_id", *PRODUCT), on="item_id", how="left", maintain_order="left")
    return rows.select(
        pl.Series("Invoice", rng.integers(500_000, 600_000, rows.height)).cast(pl.Utf8),
        pl.col("item_id").alias("StockCode"),
        pl.col("title").alias("Description"),
        pl.col("category").alias("Category"),
        pl.col("brand").alias("Brand"),
        pl.col("price").alias("Price"),
        pl.col("event_type").alias("Action"),
        pl.from_epoch("timestamp").dt.strftime("%m/%d/%Y %H:%M:%S").alias("Date"),
        pl.col("user_id").alias("Customer ID"),
    )


def train(events: Path, out: Path, epochs: int, extra: list[str]) -> tuple[dict, list[str], float]:
    cmd = [sys.executable, "-m", "genrec", "train", "--model", "hstu", "--item-attributes", "--dataset", str(events),
           "--out", str(out), "--epochs", str(epochs), "--threads", "1", "--seed", "0", *extra]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    report = [ln for ln in res.stdout.splitlines() if ln.startswith(("read ", "  "))][:14]
    return json.loads((out / "metrics.json").read_text()), report, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    shop = generate_shop(shop_config(args.size, seed=args.seed))
    tmp = Path(tempfile.mkdtemp(prefix="genrec-export-"))
    clean = write_clean(shop, tmp / "clean")
    (tmp / "export").mkdir()
    rows = export_rows(shop, args.seed)
    rows.write_csv(tmp / "export" / "orders.csv")
    export = tmp / "export" / "orders.csv"

    # the same export as a workbook, a sheet per year of the Date column (needs xlsxwriter, a dev dependency)
    workbook = None
    try:
        import xlsxwriter

        workbook = tmp / "export-xlsx" / "orders.xlsx"
        workbook.parent.mkdir()
        half = rows.height // 2
        with xlsxwriter.Workbook(workbook) as wb:
            rows.head(half).write_excel(wb, worksheet="First half")
            rows.tail(rows.height - half).write_excel(wb, worksheet="Second half")
    except ImportError:
        print("xlsxwriter not installed: the workbook check is skipped")

    a = load_path(clean)
    b = load_path(export, ReadOptions(drop_incomplete=True))
    same = bool(
        np.array_equal(a.sequences.offsets, b.sequences.offsets)
        and [a.sequences.item_vocab.raw(int(i)) for i in a.sequences.items]
        == [b.sequences.item_vocab.raw(int(i)) for i in b.sequences.items]
        and np.array_equal(a.sequences.timestamps, b.sequences.timestamps)
    )
    same_xlsx = None
    if workbook is not None:
        c = load_path(workbook, ReadOptions(drop_incomplete=True))
        same_xlsx = bool(np.array_equal(b.sequences.offsets, c.sequences.offsets)
                         and np.array_equal(b.sequences.timestamps, c.sequences.timestamps)
                         and b.catalog.sort("item_id").equals(c.catalog.sort("item_id")))  # fmt: skip
    print(f"clean vs export sequences identical: {same}; export csv vs xlsx: {same_xlsx}", flush=True)

    runs = {}
    for name, path, extra in (("clean", clean, []), ("export", export, ["--drop-incomplete"])):
        print(f"training on the {name} files ...", flush=True)
        metrics, report, seconds = train(path, tmp / f"run-{name}", args.epochs, extra)
        runs[name] = {"metrics": metrics["metrics"], "best_epoch": metrics["best_epoch"], "seconds": round(seconds, 1),
                      "report": report}  # fmt: skip
    record = {
        "command": "python benchmarks/own_log_export.py"
        + (f" --size {args.size}" if args.size != "small" else "")
        + (f" --epochs {args.epochs}" if args.epochs != 20 else ""),
        "data": f"synthetic:{args.size} (seed {args.seed}), {shop.events.height:,} events, "
        f"export {rows.height:,} rows ({rows['Customer ID'].null_count():,} guest rows)",
        "protocol": "genrec train --model hstu --item-attributes, 1 thread, seed 0; test split = each user's last "
        "event, full catalog, seen items excluded, fit: train, scored once per run",
        "sequences_identical": same,
        "xlsx_identical_to_csv": same_xlsx,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "own_log_export.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Own log: a raw order-line export against the same events as clean files",
        "",
        f"`{record['command']}`. {record['data']}. {record['protocol']}.",
        "",
        f"Sequences read from the export (guest rows dropped) identical to the clean files: **{same}**; "
        f"the export as an Excel workbook (two sheets) reads identically to its CSV: **{same_xlsx}**.",
        "",
        "| files | flags beyond the model's | HR@10 | NDCG@10 | HR@50 | NDCG@50 | best epoch | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, extra in (("clean", "none"), ("export", "`--drop-incomplete`")):
        r, m = runs[name], runs[name]["metrics"]
        lines.append(f"| {name} | {extra} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {m['HR@50']:.4f} | "
                     f"{m['NDCG@50']:.4f} | {r['best_epoch']} | {r['seconds']:.0f} |")  # fmt: skip
    for name in ("clean", "export"):
        lines += [
            "",
            f"What `genrec train` printed on reading the {name} files:",
            "",
            "```",
            *runs[name]["report"],
            "```",
        ]
    (args.out / "own_log_export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
