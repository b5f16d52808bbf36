"""The paper's Tables 2 and 3: published rows (package data) beside the user's cells, as Markdown and LaTeX.

The one place that maps paper columns to ablate metric names. Each column lists the metric names it
accepts, first found wins, so a benchmark that names its metric slightly differently needs one more alias
here, nowhere else. A cell lacking a benchmark shows "–", like the paper's own gaps.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from .table import AXES
from .units import FRACTION, metric_units

DASH = "–"


@dataclass(frozen=True)
class Column:
    key: str                       # column of the paper CSV
    label: str                     # header as the paper prints it
    metrics: tuple[str, ...]       # accepted metric names in rows, first found wins
    percent: bool = True           # the paper prints a percentage (MME prints raw sums)


TABLE2 = ("table2_academic", "Table 2: academic-task-oriented benchmarks", (
    Column("vqav2", "VQAv2", ("eval/vqav2/accuracy",)),
    Column("gqa", "GQA", ("eval/gqa/accuracy",)),
    Column("vizwiz", "VizWiz", ("eval/vizwiz/accuracy",)),
    Column("sqa_img", "SQA^I", ("eval/scienceqa/img_accuracy", "eval/sqa/img_accuracy")),
    Column("textvqa", "VQA^T", ("eval/textvqa/accuracy",)),
), ("llm", "resolution", "pt_data", "it_data"))
TABLE3 = ("table3_instruction", "Table 3: instruction-following benchmarks", (
    Column("pope", "POPE", ("eval/pope/f1", "eval/pope/average/f1", "eval/pope/avg_f1")),
    Column("mme_perception", "MME-P", ("eval/mme/perception",), percent=False),
    Column("mme_cognition", "MME-C", ("eval/mme/cognition",), percent=False),
    # ablate.eval names MMBench's CircularEval score `accuracy` and SEED's image-only accuracy `accuracy`
    Column("mmbench_en", "MMB-en", ("eval/mmbench/circular_accuracy", "eval/mmbench_en/circular_accuracy",
                                    "eval/mmbench/accuracy")),
    Column("mmbench_cn", "MMB-cn", ("eval/mmbench_cn/circular_accuracy", "eval/mmbench_cn/accuracy")),
    Column("seed_img", "SEED-img", ("eval/seed/img_accuracy", "eval/seed_bench/img_accuracy", "eval/seed/accuracy")),
    Column("mm_vet", "MM-Vet", ("eval/mmvet/total", "eval/mm_vet/total")),
), ("pt_data", "it_data"))
TABLES = {"table2": TABLE2, "table3": TABLE3}
INFO_LABELS = {"method": "Method", "llm": "LLM", "resolution": "Res.", "pt_data": "PT", "it_data": "IT"}
GROUP_TITLES = {"MLLM": "Multimodal Large Language Models", "MSLM": "Multimodal Small Language Models",
                "ablate": "This project (ablate cells; mean over seeds)"}

COLUMNS = tuple(c for _, _, cols, _ in TABLES.values() for c in cols)     # Table 2's, then Table 3's
# metric name -> the paper's short label; figures use it to title known benchmarks
METRIC_LABELS = {m: c.label for c in COLUMNS for m in c.metrics}
PAPER_METRICS = tuple(METRIC_LABELS)


def paper_rows(which: str) -> pd.DataFrame:
    """The published rows of 'table2' or 'table3', as text exactly as transcribed ('' = not reported)."""
    name = TABLES[which][0]
    text = resources.files("ablate.results").joinpath(f"paper_data/{name}.csv").read_text(encoding="utf-8")
    return pd.DataFrame(list(csv.DictReader(io.StringIO(text)))).fillna("")


def find_metric(available, column: Column) -> str | None:
    """The first of the column's accepted metric names present in `available`."""
    return next((m for m in column.metrics if m in set(available)), None)


def _fmt(v: float, percent: bool, as_fraction: bool) -> str:
    if v is None or pd.isna(v):
        return DASH
    return f"{100 * v if (percent and as_fraction) else v:.1f}"


def user_rows(table: pd.DataFrame, which: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per cell setting (axes but seed) that has any of the table's metrics; notes say what lacks."""
    _, _, cols, info = TABLES[which]
    notes = []
    if table.empty:
        return pd.DataFrame(), ["no complete cells"]
    found = {c.key: find_metric(table["metric"].unique(), c) for c in cols}
    if not any(found.values()):
        return pd.DataFrame(), ["no cell reports any of this table's benchmarks (accepted metric names: %s)" %
                                ", ".join(m for c in cols for m in c.metrics)]
    notes += [f"{c.label}: no cell reports it (looked for {', '.join(c.metrics)})" for c in cols if not found[c.key]]
    sub = table[table["metric"].isin([m for m in found.values() if m])]
    # fractions (0..1) are printed as the paper's percentages; rows written in percent (the contract) stay
    # as they are. Decided by units.metric_units, not by size: a tiny cell's 0.4 % is not 40 %.
    units = metric_units(table)
    as_fraction = {m: units.get(m) == FRACTION for m in found.values() if m}
    setting = [a for a in AXES if a != "seed" and a in sub]
    key = sub[setting].astype(str).agg(" ".join, axis=1)
    varying = [a for a in setting if sub[a].astype(str).nunique() > 1 and a not in
               ({"lm", "resolution"} if "llm" in info else set())]
    rows = []
    for _, grp in sub.groupby(key, sort=True):
        first = grp.iloc[0]
        label = "/".join(str(first[a]) for a in varying) or str(first["encoder"])
        n_seeds = grp["seed"].nunique()
        row = {"method": f"{label} ({n_seeds} seed{'s' if n_seeds != 1 else ''})", "llm": str(first["lm"]),
               "resolution": str(first["resolution"]), "pt_data": str(first["data"]), "it_data": str(first["data"]),
               "group": "ablate"}
        for c in cols:
            m = found[c.key]
            vals = grp.loc[grp.metric == m, "value"] if m else pd.Series(dtype=float)
            row[c.key] = _fmt(vals.mean() if len(vals) else None, c.percent, as_fraction.get(m, False))
        rows.append(row)
    return pd.DataFrame(rows), notes


def build(table: pd.DataFrame, which: str) -> tuple[pd.DataFrame, list[str]]:
    """Paper rows then user rows, every cell a display string; columns: method, info..., benchmarks..., group."""
    _, _, cols, info = TABLES[which]
    paper = paper_rows(which)
    users, notes = user_rows(table, which)
    out = pd.concat([paper, users], ignore_index=True) if len(users) else paper
    keep = ["method", *info, *[c.key for c in cols], "group"]
    return out[keep].fillna("").replace("", DASH), notes


def headers(which: str) -> list[str]:
    _, _, cols, info = TABLES[which]
    return [INFO_LABELS["method"], *[INFO_LABELS[i] for i in info], *[c.label for c in cols]]


def to_markdown(df: pd.DataFrame, which: str) -> str:
    """A Markdown table with the paper's group rows (MLLM, MSLM) and the user's cells last."""
    heads = headers(which)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|"]
    for group, grp in df.groupby("group", sort=False):
        lines.append(f"| **{GROUP_TITLES.get(group, group)}** |" + " |" * (len(heads) - 1))
        for _, r in grp.iterrows():
            cells = [str(v).replace("|", "\\|") for v in r.drop("group").tolist()]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"),
                 ("$", r"\$"), ("†", r"$^\dagger$"), ("*", r"$^*$"), ("–", "--"), ("^I", r"$^\mathrm{I}$"),
                 ("^T", r"$^\mathrm{T}$")):
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, which: str) -> str:
    """A booktabs tabular in the paper's layout (needs \\usepackage{booktabs})."""
    heads = headers(which)
    n = len(heads)
    out = [r"\begin{tabular}{l" + "c" * (n - 1) + "}", r"\toprule", " & ".join(_tex(h) for h in heads) + r" \\"]
    for group, grp in df.groupby("group", sort=False):
        out += [r"\midrule", rf"\multicolumn{{{n}}}{{l}}{{\textit{{{_tex(GROUP_TITLES.get(group, group))}}}}} \\",
                r"\midrule"]
        out += [" & ".join(_tex(v) for v in r.drop("group").tolist()) + r" \\" for _, r in grp.iterrows()]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"
