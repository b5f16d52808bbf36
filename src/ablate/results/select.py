"""Arm selection: the cells that vary one axis while every other axis is held at one setting.

A results root mixes sweeps (the encoder sweep at 336 px, the resolution sweep with CLIP, ...). A figure
about one axis must compare like with like, so it takes the setting of the other axes (seed aside) under
which the most values of its axis exist -- ties broken by more cells, then by name so the choice is stable
-- and says which setting it chose and which cells it left out and why.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import pandas as pd

from .table import AXES, cells


@dataclass
class Selection:
    axis: str
    arms: list                       # values of `axis` present under the chosen setting, display order
    held_fixed: dict                 # the other axes' chosen values
    table: pd.DataFrame              # the metric rows of the chosen cells
    missing: list[str] = field(default_factory=list)   # human-readable lines: absent arms, left-out cells


def _order(values, expected) -> list:
    """Expected values first in their order, then the rest sorted (numbers numerically)."""
    exp = [v for v in expected if v in values]
    rest = [v for v in values if v not in expected]
    try:
        rest = sorted(rest, key=float)
    except (TypeError, ValueError):
        rest = sorted(rest, key=str)
    return exp + rest


def select_arms(table: pd.DataFrame, axis: str, expected=(), include=None, exclude=(),
                axes: tuple[str, ...] = AXES) -> Selection:
    """Choose the arms of `axis` (values in `include` if given, never those in `exclude`).

    `expected` lists the values the paper compares (used for order and to report which are absent).
    """
    expected = [str(v) for v in expected]
    if table.empty or axis not in table:
        return Selection(axis, [], {}, table.iloc[0:0], [f"no complete cells with a `{axis}` axis"])
    info = cells(table)
    val = info[axis].astype(str)
    keep = info[axis].notna() & ~val.isin([str(v) for v in exclude])
    if include is not None:
        keep &= val.isin([str(v) for v in include])
    info, val = info[keep], val[keep]
    if info.empty:
        return Selection(axis, [], {}, table.iloc[0:0], [f"no cells with {axis} in {list(include or [])}"])
    others = [a for a in axes if a not in (axis, "seed") and a in info]
    key = info[others].astype(str).agg(" | ".join, axis=1) if others else pd.Series("", index=info.index)
    stats = (pd.DataFrame({"key": key, "val": val, "cell": info["cell_id"]})
             .groupby("key").agg(n_values=("val", "nunique"), n_cells=("cell", "size")).reset_index())
    best = stats.sort_values(["n_values", "n_cells", "key"], ascending=[False, False, True]).iloc[0]["key"]
    chosen = info[key == best]
    held = {a: chosen.iloc[0][a] for a in others}
    held = {a: (int(v) if isinstance(v, numbers.Integral) else v) for a, v in held.items()}   # numpy ints print as ints
    present = set(val[key == best])
    arms = _order(present, expected)
    missing = [f"{axis}={v}: no complete cells" for v in expected if v not in set(val)]
    for v in sorted(set(val) - present, key=str):
        n = int((val == v).sum())
        missing.append(f"{axis}={v}: {n} cell(s), all under other settings of the other axes, so not comparable here")
    left_out = int((key != best).sum())
    if left_out:
        missing.append(f"{left_out} cell(s) under other settings of the other axes are not used by this figure")
    sub = table[table["cell_id"].isin(chosen["cell_id"])]
    seeds = sub.groupby(sub[axis].astype(str))["seed"].nunique()
    if seeds.nunique() > 1:
        missing.append("arms have different numbers of seeds: " +
                       ", ".join(f"{axis}={a}: {seeds.get(a, 0)}" for a in arms))
    # arms keep their table type (int resolutions stay ints) for labels and baselines
    typed = {str(v): int(v) if isinstance(v, numbers.Integral) else v for v in sub[axis].dropna().unique()}
    return Selection(axis, [typed[a] for a in arms], held, sub.reset_index(drop=True), missing)


def describe(held: dict) -> str:
    """`encoder=siglip, resolution=384, ...` for titles and the report."""
    return ", ".join(f"{k}={v}" for k, v in held.items())
