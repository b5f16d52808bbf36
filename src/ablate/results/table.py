"""The results table: every `result.json` under a root gathered into one tidy pandas DataFrame.

One row per cell x metric (a cell already pins its seed), every axis a column, plus the cell's compute
numbers. Failed cells are kept apart (they have no metrics, only an error), and files that cannot be
trusted (unknown schema_version, broken JSON) are skipped with a warning that names them, so one bad file
never hides the rest. The report and notebooks read rows only through this module.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 1
# The axes the architecture contract defines, in the order tables show them. A row may carry more axes
# (a later sweep adds one); those become columns too, after these.
AXES = ("encoder", "resolution", "lm", "tuning", "freeze", "data", "scale", "seed")
INT_AXES = ("resolution", "seed")
COMPUTE_COLUMNS = ("wall_s", "wall_s_stage1", "wall_s_stage2", "wall_s_eval", "gpu_hours", "tokens_seen",
                   "train_flops", "peak_mem_mb", "trainable_params", "trainable_params_stage1", "total_params")


@dataclass
class Collection:
    """What one results root holds: the metric table, the failed cells, and the files that were skipped."""
    root: Path
    table: pd.DataFrame
    failed: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, why)
    notes: list[str] = field(default_factory=list)                # non-fatal oddities (duplicates, empty rows)
    axes: tuple[str, ...] = AXES
    n_read: int = 0                                               # rows parsed, complete or failed


def _num(x):
    """A number or None: rows written by hand or by older code may hold strings or nulls."""
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _cell_columns(row: dict, path: Path, axes: tuple[str, ...]) -> dict:
    """The per-cell columns shared by every metric of one row: identity, axes, compute."""
    ax = row.get("axes") or {}
    comp = row.get("compute") or {}
    wall = comp.get("wall_s") or {}
    if not isinstance(wall, dict):          # a bare number is the total
        wall = {"total": wall}
    params = row.get("params") or {}
    st1, st2 = params.get("stage1") or {}, params.get("stage2") or {}
    out = {"cell_id": row.get("cell_id") or path.parent.name, "sweep": row.get("sweep")}
    out.update({a: ax.get(a) for a in axes})
    out.update({
        "wall_s": _num(wall.get("total")), "wall_s_stage1": _num(wall.get("stage1")),
        "wall_s_stage2": _num(wall.get("stage2")), "wall_s_eval": _num(wall.get("eval")),
        "gpu_hours": _num(comp.get("gpu_hours")), "tokens_seen": _num(comp.get("tokens_seen")),
        "train_flops": _num(comp.get("train_flops")), "peak_mem_mb": _num(comp.get("peak_mem_mb")),
        "trainable_params": _num(st2.get("trainable")), "trainable_params_stage1": _num(st1.get("trainable")),
        "total_params": _num(params.get("total")), "device": comp.get("device"),
        "stage1_shared": comp.get("stage1_shared"), "stage1_id": row.get("stage1_id"), "git_sha": row.get("git_sha"),
        "ablate_version": row.get("ablate_version"), "created": row.get("created"),
        "cell_dir": str(path.parent),
    })
    return out


def split_metric(name: str) -> tuple[str | None, str]:
    """`eval/pope/f1` -> ("pope", "f1"); training metrics have no benchmark: `train/stage2/loss` -> (None, "loss")."""
    parts = name.split("/")
    if len(parts) >= 3 and parts[0] == "eval":
        return parts[1], "/".join(parts[2:])
    return None, parts[-1]


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"unreadable JSON ({type(e).__name__}: {e})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    version = row.get("schema_version")
    if version != SCHEMA_VERSION:
        return None, f"schema_version {version!r}, this ablate reads {SCHEMA_VERSION}"
    return row, None


def collect(root: str | Path) -> Collection:
    """Read every `<root>/cells/*/result.json`; warn (naming the files) about the ones that are skipped."""
    root = Path(root)
    paths = sorted(root.glob("cells/*/result.json"))
    rows, skipped = [], []
    for p in paths:
        row, why = _read_json(p)
        if row is None:
            skipped.append((str(p), why))
        else:
            rows.append((p, row))
    if skipped:
        warnings.warn("ablate.results: skipped %d result file(s):\n%s" % (
            len(skipped), "\n".join(f"  {p}: {why}" for p, why in skipped)), stacklevel=2)
    extra = sorted({k for _, r in rows for k in (r.get("axes") or {}) if k not in AXES})
    axes = AXES + tuple(extra)
    records, failed, notes = [], [], []
    for p, row in rows:
        cell = _cell_columns(row, p, axes)
        if row.get("status", "complete") != "complete":
            failed.append({**cell, "status": row.get("status"), "error": row.get("error")})
            continue
        metrics = row.get("metrics") or {}
        if not metrics:
            notes.append(f"no metrics in complete row {p}")
        per_q = row.get("per_question") or {}
        for name, value in metrics.items():
            bench, leaf = split_metric(name)
            pq = per_q.get(bench) if bench else None
            records.append({**cell, "benchmark": bench, "metric": name, "metric_leaf": leaf,
                            "value": _num(value),
                            "per_question": str(p.parent / pq) if pq else None})
    table = _typed(pd.DataFrame.from_records(records, columns=_columns(axes)), axes)
    table, dup_notes = _drop_duplicate_cells(table, axes)
    fail_cols = [c for c in _columns(axes) if c not in ("benchmark", "metric", "metric_leaf", "value",
                                                       "per_question")] + ["status", "error"]
    failed_df = _typed(pd.DataFrame.from_records(failed, columns=fail_cols), axes)
    return Collection(root, table, failed_df, skipped, notes + dup_notes, axes, n_read=len(rows))


def _columns(axes: tuple[str, ...]) -> list[str]:
    return ["cell_id", "sweep", *axes, "benchmark", "metric", "metric_leaf", "value", *COMPUTE_COLUMNS,
            "device", "stage1_shared", "stage1_id", "git_sha", "ablate_version", "created", "cell_dir", "per_question"]


def _typed(df: pd.DataFrame, axes: tuple[str, ...]) -> pd.DataFrame:
    """Integer axes as nullable ints (so 384 never prints as 384.0); text axes as objects."""
    for a in axes:
        if a in INT_AXES:
            df[a] = pd.to_numeric(df[a], errors="coerce").astype("Int64")
        else:
            df[a] = df[a].astype(object).where(df[a].notna(), None)
    for c in ("value", *COMPUTE_COLUMNS):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _drop_duplicate_cells(table: pd.DataFrame, axes: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """Two cell dirs with the same axes (e.g. after a cell-id change) would count one seed twice: keep the newest."""
    if table.empty:
        return table, []
    cells = table.drop_duplicates("cell_id")
    key = cells[list(axes)].astype(str).agg("|".join, axis=1)
    notes = []
    keep = set()
    for _, grp in cells.assign(_key=key).groupby("_key", sort=False):
        newest = grp.sort_values("created", na_position="first").iloc[-1]
        keep.add(newest["cell_id"])
        if len(grp) > 1:
            notes.append("duplicate cells with identical axes %s: kept %s, ignored %s" % (
                grp.iloc[0]["_key"], newest["cell_id"], ", ".join(c for c in grp["cell_id"] if c != newest["cell_id"])))
    return table[table["cell_id"].isin(keep)].reset_index(drop=True), notes


def load_table(root: str | Path) -> pd.DataFrame:
    """The tidy metric table of a results root (notebook entry point); failed cells: `load_failed`."""
    return collect(root).table


def load_failed(root: str | Path) -> pd.DataFrame:
    """One row per failed cell with its axes and error."""
    return collect(root).failed


def save(collection: Collection, out_dir: str | Path) -> dict[str, Path]:
    """Write table.parquet, table.csv and failed.csv; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out / "table.parquet", "csv": out / "table.csv", "failed": out / "failed.csv"}
    collection.table.to_parquet(paths["parquet"], index=False)
    collection.table.to_csv(paths["csv"], index=False)
    collection.failed.to_csv(paths["failed"], index=False)
    return paths


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (metrics dropped): the axes and compute numbers."""
    keep = [c for c in table.columns if c not in ("benchmark", "metric", "metric_leaf", "value", "per_question")]
    return table[keep].drop_duplicates("cell_id").reset_index(drop=True)


def wide(table: pd.DataFrame, axes: tuple[str, ...] = AXES) -> pd.DataFrame:
    """One row per cell, one column per metric: the shape a quick look in a notebook wants."""
    if table.empty:
        return table
    # pivot on the cell id alone: axes may be null, and pandas drops null index keys
    values = table.pivot_table(index="cell_id", columns="metric", values="value", aggfunc="first")
    values.columns.name = None
    info = cells(table)[["cell_id", *[a for a in axes if a in table]]]
    return info.merge(values.reset_index(), on="cell_id", how="left")
