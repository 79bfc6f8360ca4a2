"""Offline (batch) inference, side by side in one run: `python -m reprise predict` against
`mlflow models predict --env-manager local` (MLflow's batch command; it reads CSV or JSON only)
and the in-process floor (pandas reads the Parquet file, the scikit-learn pipeline's
predict_proba scores it: no checks, no output written), on Adult-shaped files of 1M and 10M rows
(the real test split repeated, with an id column). Each runs as a subprocess under
/usr/bin/time -v; the RSS of its whole process tree is sampled from /proc every 0.2 s. Appends
its table to benchmarks/RESULTS.md; the files are made in a temporary folder and deleted.

    .venv/bin/python benchmarks/batch.py [--rows 1000000 10000000]
        [--tracking-uri URI [--model-version N]] [--mlflow-budget-s 900]

Without --tracking-uri a store is made in a temporary folder: a whole pipeline run on the bundled
data (~1 minute), its candidate version aliased prod (see benchmarks/online.py).

Targets: Reprise >= 5x `mlflow models predict`'s rows/s; Reprise's time <= 1.3x the floor's;
10M rows with a peak RSS (the process tree's sum) < 2 GiB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import code_state, record
from online import MODEL_NAME, make_store, model_columns

GIB = 1 << 30
SAMPLE_SECONDS = 0.2
GROUP_ROWS = 100_000  # rows per Parquet row group / CSV write
PAGE = os.sysconf("SC_PAGE_SIZE")
# Reprise's first predict with a model version loads it through MLflow and compiles it; later
# ones read the compiled arrays from the cache folder (a new, empty one for each benchmark run)
FIRST_USE = "reprise predict, first use of the version"
FLOOR = r"""
import json, sys, time
started = time.perf_counter()
import mlflow, numpy as np, pandas as pd, pyarrow.parquet as pq
path, uri, columns, mode = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
chunk = int(sys.argv[5])
model = mlflow.sklearn.load_model(uri)
loaded = time.perf_counter()
threshold = float(getattr(model, "threshold", 0.5))
if mode == "one call":
    proba = model.predict_proba(pd.read_parquet(path, columns=columns))[:, 1]
    rows, positive = len(proba), int((proba >= threshold).sum())
else:
    rows = positive = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=columns):
        proba = model.predict_proba(batch.to_pandas())[:, 1]
        rows, positive = rows + len(proba), positive + int((proba >= threshold).sum())
done = time.perf_counter()
print(json.dumps({"rows": rows, "positive": positive, "start_and_load": loaded - started,
                  "read_and_score": done - loaded}))
"""


# --- the files ------------------------------------------------------------------------------------
def make_files(test_table: Path, columns: list[str], rows: int, base: Path) -> tuple[Path, Path]:
    """``rows`` rows of the test split repeated, with an id, as Parquet and CSV, written one row
    group at a time (memory: one group, not the file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    test = pq.read_table(test_table, columns=columns)
    block = pa.concat_tables([test] * -(-GROUP_ROWS // test.num_rows)).combine_chunks()
    parquet, csv = base / f"adult_{rows}.parquet", base / f"adult_{rows}.csv"
    schema = pa.schema([pa.field("id", pa.int64()), *test.schema])
    with (
        pq.ParquetWriter(parquet, schema) as pq_out,
        pa_csv.CSVWriter(str(csv), schema) as csv_out,
    ):
        for start in range(0, rows, GROUP_ROWS):
            n = min(GROUP_ROWS, rows - start)
            ids = pa.array(np.arange(start, start + n, dtype=np.int64))
            group = block.slice(0, n).add_column(0, "id", ids)
            pq_out.write_table(group, row_group_size=GROUP_ROWS)
            csv_out.write_table(group)
    return parquet, csv


# --- timing -------------------------------------------------------------------------------------
@dataclass
class Timed:
    """One tool on one file: wall time, memory, and how it ended."""

    tool: str
    input: str
    rows: int
    wall: float = 0.0
    max_rss: int = 0  # bytes, /usr/bin/time -v: the largest single process
    tree_rss: int = 0  # bytes, peak of the sum over the process tree
    tree_pss: int = 0  # bytes, peak of the sum of proportional set sizes (shared pages split)
    processes: int = 0  # most processes seen at once
    status: str = "ok"
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def rate(self) -> float:
        return self.rows / self.wall if self.ok and self.wall else 0.0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            rss = int(handle.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            pss = next(
                (int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:")), 0
            )
    except (OSError, ValueError, IndexError):
        return 0, 0
    return rss, pss


def _available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _elapsed(text: str) -> float | None:
    """Seconds from time -v's 'Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.03'."""
    match = re.search(r"Elapsed \(wall clock\) time .*?: ([\d:.]+)", text)
    if not match:
        return None
    seconds = 0.0
    for part in match.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def timed(
    tool: str,
    source: Path,
    rows: int,
    command: list[str],
    env: dict[str, str],
    base: Path,
    budget_s: float,
    max_rss: int,
) -> Timed:
    """Run ``command`` under /usr/bin/time -v in its own process group; stop it (and record
    why) past ``budget_s`` seconds or when its tree's RSS passes ``max_rss`` bytes."""
    result = Timed(tool, source.suffix.lstrip("."), rows)
    max_rss = min(max_rss, _available() - 2 * GIB)  # leave room for what else runs here
    out, err = base / "stdout.txt", base / "stderr.txt"
    sys.stderr.write(f"  {tool} on {rows:,} rows ({result.input}) ...")
    sys.stderr.flush()
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", *command],
            cwd=base,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        while process.poll() is None:
            pids = [p for p in _tree(process.pid) if p != process.pid]
            sizes = [_memory(p) for p in pids]
            rss, pss = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
            result.tree_rss, result.tree_pss = max(result.tree_rss, rss), max(result.tree_pss, pss)
            result.processes = max(result.processes, sum(1 for s in sizes if s[0]))
            elapsed = time.monotonic() - started
            if elapsed > budget_s or rss > max_rss:
                result.status = (
                    f"stopped after {elapsed:.0f} s (budget {budget_s:.0f} s)"
                    if elapsed > budget_s
                    else f"stopped at {rss / GIB:.1f} GiB RSS after {elapsed:.0f} s "
                    f"(memory budget {max_rss / GIB:.1f} GiB)"
                )
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                break
            time.sleep(SAMPLE_SECONDS)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    wall = time.monotonic() - started
    report = err.read_text(errors="replace")
    result.stdout = out.read_text(errors="replace")
    if result.ok and process.returncode != 0:
        result.status = f"failed (exit {process.returncode})"
        sys.stderr.write(f"\n{report[-3000:]}\n")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    result.max_rss = int(found.group(1)) * 1024 if found else 0
    result.wall = _elapsed(report) or wall
    sys.stderr.write(
        f" {result.wall:.1f} s, {result.rate:,.0f} rows/s, tree RSS {result.tree_rss / GIB:.2f} "
        f"GiB ({result.status})\n"
    )
    return result


# --- checks -------------------------------------------------------------------------------------
def reprise_labels(path: Path) -> tuple[int, int]:
    """(rows, positive labels) of Reprise's output."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "label"])
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids.astype(np.int64), np.arange(len(ids))):
        raise SystemExit(f"{path}: the ids are not those of the input, in order")
    return table.num_rows, int(table.column("label").to_numpy().sum())


def mlflow_labels(path: Path) -> tuple[int, int]:
    """(rows, positive labels) of `mlflow models predict`'s JSON output."""
    with path.open() as handle:
        predictions = json.load(handle)["predictions"]
    return len(predictions), int(sum(predictions))


# --- the report ---------------------------------------------------------------------------------
def _gib(size: int) -> str:
    return f"{size / GIB:.2f}"


def _after_start(result: Timed, results: list[Timed], start_rows: int) -> str:
    """Rows/s once started: the rows beyond the start-up run's, over the seconds beyond its."""
    first = next(
        (
            r
            for r in results
            if r.rows == start_rows and (r.tool, r.input) == (result.tool, result.input) and r.ok
        ),
        None,
    )
    if first is None or not result.ok or result.rows == start_rows or result.wall <= first.wall:
        return ""
    return f"{(result.rows - first.rows) / (result.wall - first.wall):,.0f}"


def report(
    results: list[Timed], command: str, load: str, notes: list[str], start_rows: int
) -> list[str]:
    lines = [
        f"\n## Offline inference ({dt.date.today().isoformat()}, the test split repeated)\n",
        f"`{command}`\n",
        f"{code_state()}. Load average (1, 5, 15 min): {load}. "
        "Reprise with its defaults (2 workers, one per core, chunks of 200,000 rows, Parquet "
        "out); its first run with the model version (the first row) loads the version through "
        "MLflow and compiles it into the cache folder, which starts empty; every later run "
        "reads the compiled arrays from there. `mlflow models predict -t csv` reads the CSV of the same rows (it reads no "
        "Parquet) and writes JSON; the floor reads the Parquet file with pandas and calls the "
        "pipeline's predict_proba in one process (no checks, nothing written). Wall time "
        "includes each process's start and model load. RSS: time -v's largest single "
        "process, and the peak of the sum over the process tree (sampled every 0.2 s; PSS "
        f"counts the pages forked workers share once). The {start_rows:,}-row runs measure "
        "each tool's fixed start; 'rows/s once started' takes it out: (rows - its rows) / "
        "(wall - its wall).\n",
        "| rows | tool | input | wall s | rows/s | rows/s once started "
        "| max RSS GiB (one process) | peak RSS GiB (tree sum) | peak PSS GiB (tree sum) "
        "| processes | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.rows:,} | {r.tool} | {r.input} | {r.wall:.1f} | "
            f"{f'{r.rate:,.0f}' if r.ok else '-'} | {_after_start(r, results, start_rows)} | "
            f"{_gib(r.max_rss)} | {_gib(r.tree_rss)} | {_gib(r.tree_pss)} | {r.processes} | "
            f"{r.status} |"
        )
    lines += ["", "Targets:", ""]
    for rows in sorted({r.rows for r in results} - {start_rows}):
        at = {(r.tool, r.input): r for r in results if r.rows == rows}
        reprise = at.get(("reprise predict", "parquet"))
        reprise_csv = at.get(("reprise predict", "csv"))
        mlflow = at.get(("mlflow models predict", "csv"))
        floors = [r for r in results if r.rows == rows and r.tool.startswith("floor") and r.ok]
        floor = min(floors, key=lambda r: r.wall) if floors else None
        if reprise is None or not reprise.ok:
            lines.append(f"- {rows:,} rows: Reprise did not finish ({reprise and reprise.status})")
            continue
        if mlflow is not None and mlflow.ok:
            ratio = reprise.rate / mlflow.rate
            lines.append(
                f"- {rows:,} rows, Reprise (Parquet) vs mlflow models predict (CSV): "
                f"{ratio:.1f}x rows/s (>= 5x: {'met' if ratio >= 5 else 'NOT met'})"
            )
            if reprise_csv is not None and reprise_csv.ok:
                ratio = reprise_csv.rate / mlflow.rate
                lines.append(
                    f"- {rows:,} rows, both reading the same CSV: {ratio:.1f}x rows/s "
                    f"(>= 5x: {'met' if ratio >= 5 else 'NOT met'})"
                )
        elif mlflow is not None:
            smaller = [
                r for r in results if r.tool == mlflow.tool and r.ok and start_rows < r.rows < rows
            ]
            scale = (
                f"; at {smaller[-1].rows:,} rows it peaked at {_gib(smaller[-1].tree_rss)} GiB "
                f"and took {smaller[-1].wall:.0f} s, so this size needs about "
                f"{smaller[-1].tree_rss * rows / smaller[-1].rows / GIB:.0f} GiB"
                if smaller
                else ""
            )
            lines.append(
                f"- {rows:,} rows, mlflow models predict: {mlflow.status}{scale} "
                "(the 5x target is judged on the smaller files)"
            )
        if floor is not None:
            ratio = reprise.wall / floor.wall
            lines.append(
                f"- {rows:,} rows, Reprise {reprise.wall:.1f} s vs the floor ({floor.tool}) "
                f"{floor.wall:.1f} s: {ratio:.2f}x "
                f"(<= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})"
            )
        if rows >= 10_000_000:
            peak = reprise.tree_rss
            lines.append(
                f"- {rows:,} rows, Reprise's peak RSS (tree sum) {_gib(peak)} GiB "
                f"(< 2 GiB: {'met' if peak < 2 * GIB else 'NOT met'})"
            )
    lines += ["", *notes] if notes else []
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="file sizes"
    )
    parser.add_argument("--tracking-uri", help="use this store instead of making one")
    parser.add_argument("--model-version", help="with --tracking-uri: the version to score with")
    parser.add_argument(
        "--mlflow-budget-s", type=float, default=900, help="stop mlflow models predict after"
    )
    parser.add_argument(
        "--max-rss-gib", type=float, default=12, help="stop any tool whose tree passes this"
    )
    parser.add_argument(
        "--start-rows", type=int, default=1000, help="a small file: each tool's fixed start"
    )
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="the floor's chunks")
    parser.add_argument(
        "--one-call-max-rows",
        type=int,
        default=2_000_000,
        help="the floor in one call only up to this size (memory grows with the file)",
    )
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "benchmarks/batch.py", *sys.argv[1:]])
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-batch-"))
    results: list[Timed] = []
    notes: list[str] = []
    max_rss = int(args.max_rss_gib * GIB)
    try:
        store = make_store(base, args.tracking_uri, args.model_version)
        columns = model_columns(store)
        uri = f"models:/{MODEL_NAME}/{store.version}"
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        for rows in sorted({args.start_rows, *args.rows}):
            started = time.monotonic()
            parquet, csv = make_files(store.test_table, columns, rows, base)
            sys.stderr.write(
                f"{rows:,} rows: files made in {time.monotonic() - started:.0f} s (Parquet "
                f"{parquet.stat().st_size / 1e6:.0f} MB, CSV {csv.stat().st_size / 1e6:.0f} MB)\n"
            )
            counts: dict[str, tuple[int, int]] = {}
            first_use = [(FIRST_USE, parquet)] if rows == min(args.rows + [args.start_rows]) else []
            for tool, source in [
                *first_use,
                ("reprise predict", parquet),
                ("reprise predict", csv),
            ]:
                output = base / f"scored_{rows}_{source.suffix[1:]}.parquet"
                result = timed(
                    tool,
                    source,
                    rows,
                    [sys.executable, "-m", "reprise", "predict", "--model", uri]
                    + ["--input", str(source), "--output", str(output)],
                    store.env,
                    base,
                    3600,
                    max_rss,
                )
                results.append(result)
                if result.ok and tool != FIRST_USE:
                    counts[f"reprise ({source.suffix[1:]})"] = reprise_labels(output)
                output.unlink(missing_ok=True)
            output = base / f"mlflow_{rows}.json"
            result = timed(
                "mlflow models predict",
                csv,
                rows,
                [mlflow_bin, "models", "predict", "-m", uri, "-i", str(csv), "-o", str(output)]
                + ["--env-manager", "local", "-t", "csv"],
                store.env,
                base,
                args.mlflow_budget_s,
                max_rss,
            )
            results.append(result)
            if result.ok:
                counts["mlflow"] = mlflow_labels(output)
            output.unlink(missing_ok=True)
            modes = ("one call", "chunks") if rows <= args.one_call_max_rows else ("chunks",)
            for mode in modes:
                result = timed(
                    f"floor ({mode})"
                    if mode == "one call"
                    else f"floor ({args.chunk_rows:,} rows a chunk)",
                    parquet,
                    rows,
                    [sys.executable, "-c", FLOOR, str(parquet), uri, json.dumps(columns)]
                    + [mode, str(args.chunk_rows)],
                    store.env,
                    base,
                    3600,
                    max_rss,
                )
                results.append(result)
                if result.ok:
                    inside = json.loads(result.stdout.strip().splitlines()[-1])
                    counts[result.tool] = (inside["rows"], inside["positive"])
                    notes.append(
                        f"- {rows:,} rows, {result.tool}: process start and model load "
                        f"{inside['start_and_load']:.1f} s, read and predict_proba "
                        f"{inside['read_and_score']:.1f} s"
                    )
            if len(set(counts.values())) > 1:
                notes.append(f"- {rows:,} rows: the tools DISAGREE (rows, positives): {counts}")
            elif counts:
                notes.append(
                    f"- {rows:,} rows: {', '.join(counts)} scored every row, with the same "
                    f"number of positive labels ({next(iter(counts.values()))[1]:,})"
                )
            parquet.unlink()
            csv.unlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load += " at start, " + "/".join(f"{x:.2f}" for x in os.getloadavg()) + " at the end"
    lines = report(results, command, load, notes, args.start_rows)
    record(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
