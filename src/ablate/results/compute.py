"""Accuracy versus compute: one point per cell setting (mean over seeds), the Pareto front marked.

The front holds the settings no other setting beats on both counts (as cheap or cheaper and as good or
better): the ones worth their compute. x is GPU hours when every cell ran on a GPU, else wall-clock hours
(CPU runs report gpu_hours 0); train_flops can be asked for explicitly. A cell that reused a shared stage 1
reports no time for it; the hours axes charge it the time its artifact took (by stage1_id), so which arm
happened to train stage 1 first does not decide the plot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import figure_metrics, metric_label  # noqa: E402
from .table import AXES  # noqa: E402
from .units import FRACTION, PERCENT, metric_units  # noqa: E402

X_LABELS = {"gpu_hours": "GPU hours (a shared stage 1 charged to every cell using it)",
            "wall_hours": "wall-clock hours (all stages; a shared stage 1 charged to every cell using it)",
            # rows give one FLOP total per cell, so a reused stage 1 cannot be added back
            "train_flops": "training FLOPs (a shared stage 1 counted only where it was trained)"}


@dataclass
class ComputeResult:
    drawn: bool
    message: str = ""
    metric: str | None = None
    x: str | None = None
    data: pd.DataFrame = field(default_factory=pd.DataFrame)   # label, axes, n_seeds, x, y, on_front
    files: dict = field(default_factory=dict)
    unit: str | None = None                                    # units.PERCENT | FRACTION | RAW of the metric


def pareto_front(x, y) -> np.ndarray:
    """Mask of points not dominated: no other point has x' <= x and y' >= y with one of them strict."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    le, ge = x[None, :] <= x[:, None], y[None, :] >= y[:, None]          # [i, j]: j at least as good as i
    strict = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
    return ~np.any(le & ge & strict, axis=1)


def default_metric(table: pd.DataFrame) -> str | None:
    """The headline metric reported by the most cells (the paper's first on ties)."""
    if table.empty:
        return None
    ms = figure_metrics(table["metric"].unique())
    if not ms:
        return None
    counts = table[table.metric.isin(ms)].groupby("metric")["cell_id"].nunique()
    return max(ms, key=lambda m: (counts.get(m, 0), -ms.index(m)))


def _stage1_owed(cells: pd.DataFrame) -> pd.Series:
    """Seconds of stage 1 a cell's row lacks: a cell that reused a shared stage 1 reports 0 for it, so the
    arm that happened to run first would pay for everyone's. Every cell is charged its artifact's stage 1
    (as timed by the cell that trained it, found by stage1_id) -- it is part of each recipe's cost."""
    if "stage1_id" not in cells or cells["stage1_id"].isna().all():
        return pd.Series(0.0, index=cells.index)                   # rows without stage1_id: nothing to share
    own = cells["wall_s_stage1"].fillna(0.0)
    trained = own.groupby(cells["stage1_id"].fillna("?")).transform("max")
    return (trained - own).clip(lower=0.0)


def _x_column(cells: pd.DataFrame, x: str) -> tuple[str, pd.Series]:
    if x == "auto":
        gpu = cells["gpu_hours"]
        x = "gpu_hours" if gpu.notna().all() and (gpu > 0).all() else "wall_hours"
    owed = _stage1_owed(cells)
    if x == "wall_hours":
        return x, (cells["wall_s"] + owed) / 3600.0
    if x == "gpu_hours":                   # GPU hours accrue at the cell's own GPUs per training second
        trained_s = cells["wall_s_stage1"].fillna(0.0) + cells["wall_s_stage2"].fillna(0.0)
        rate = (cells["gpu_hours"] / trained_s.where(trained_s > 0)).fillna(0.0)
        return x, cells["gpu_hours"] + rate * owed
    if x not in cells:
        raise ValueError(f"x must be auto, gpu_hours, wall_hours or train_flops, got {x!r}")
    return x, cells[x]


def accuracy_vs_compute(table: pd.DataFrame, metric: str | None = None, x: str = "auto",
                        out_dir=None, name: str = "compute") -> ComputeResult:
    """Points, front and (with out_dir) `<name>.png/.svg`; `metric` defaults to `default_metric`."""
    metric = metric or default_metric(table)
    if metric is None:
        return ComputeResult(False, "not drawn: no eval/ metric in any cell")
    sub = table[table.metric == metric].copy()
    x, sub["x"] = _x_column(sub, x)
    sub = sub[sub["x"].notna() & sub["value"].notna()]
    if sub.empty:
        return ComputeResult(False, f"not drawn: no cell has both {metric} and {x}", metric, x)
    setting = [a for a in AXES if a != "seed" and a in sub]
    key = sub[setting].astype(str).agg("|".join, axis=1)
    pts = sub.groupby(key).agg(**{a: (a, "first") for a in setting}, n_seeds=("seed", "nunique"),
                                x=("x", "mean"), y=("value", "mean")).reset_index(drop=True)
    varying = [a for a in setting if pts[a].astype(str).nunique() > 1]
    pts["label"] = pts[varying].astype(str).agg("/".join, axis=1) if varying else "all cells"
    pts["on_front"] = pareto_front(pts["x"], pts["y"])
    res = ComputeResult(True, "", metric, x, pts[["label", *setting, "n_seeds", "x", "y", "on_front"]],
                        unit=metric_units(sub).get(metric))
    if len(pts) < 2:
        res.message = "only one cell setting: the front is that point"
    if out_dir is not None:
        res.files = _draw(res, Path(out_dir), name)
    return res


def _draw(res: ComputeResult, out_dir: Path, name: str) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    d = res.data.sort_values("x")
    fig, ax = plt.subplots(figsize=(7.5, 5.0), layout="constrained")
    off = d[~d.on_front]
    ax.scatter(off.x, off.y, s=28, color="0.6", label="dominated setting", zorder=2)
    front = d[d.on_front]
    ax.step(front.x, front.y, where="post", color="tab:red", lw=1.2, alpha=0.7, zorder=1)
    ax.scatter(front.x, front.y, s=46, color="tab:red", label="Pareto front", zorder=3)
    # every point named (dominated ones in grey): an unlabelled dot cannot be told from another setting
    for i, (_, r) in enumerate(d.iterrows()):
        # alternate label offsets so neighbouring points do not print on top of each other
        ax.annotate(r["label"], (r.x, r.y), xytext=(6, 6 if i % 2 == 0 else 16), textcoords="offset points",
                    fontsize=8, color="tab:red" if r.on_front else "0.4")
    if len(d) > 1 and d.x.min() > 0 and d.x.max() / d.x.min() > 30:
        ax.set_xscale("log")
    ax.set_xlabel(X_LABELS.get(res.x, res.x))
    unit = {PERCENT: "%, ", FRACTION: "fraction, "}.get(res.unit, "")
    ax.set_ylabel(metric_label(res.metric).replace("\n", "/") + f" ({unit}mean over seeds)")
    ax.set_title(f"{metric_label(res.metric).replace(chr(10), '/')} vs compute: one point per setting", fontsize=10)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="best", fontsize=8, frameon=False)     # "best" keeps it off the points
    ax.margins(x=0.12, y=0.12)
    if d.y.min() >= 0:                  # scores: the axis starts near 0 (no negative accuracies around a 0 %)
        top = ax.get_ylim()[1] if d.y.max() > 0 else 1.0
        ax.set_ylim(-0.03 * top, top)   # a hair below 0 so points at 0 are not cut in half by the frame
    files = {"png": out_dir / f"{name}.png", "svg": out_dir / f"{name}.svg"}
    fig.savefig(files["png"], dpi=150)
    fig.savefig(files["svg"])
    plt.close(fig)
    return files
