"""The report command: one results root in, one readable `report.md` (+ table, figures, LaTeX) out.

    python -m ablate.report [--root RESULTS_ROOT] [--out DIR] [--baseline AXIS=VALUE ...]

Reads rows only (never logs). Every problem -- unreadable or foreign-version rows, failed cells, figures
that cannot be drawn, benchmarks no cell reports -- is written into the report and to stderr, and the rest
of the report is still written. Exit code 0, or 1 when not a single row could be read.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from .results import compute, figures, paper, stats, units
from .results.figures import metric_label
from .results.select import describe
from .results.table import Collection, cells, collect, save


SIG = " **\\***"        # the significance mark in Markdown (an escaped, bold asterisk)


def _say(msg: str) -> None:
    print(f"ablate.report: {msg}", file=sys.stderr)


def _fmt(v, unit: str | None = None) -> str:
    """A number for the page; `unit` (units.PERCENT/FRACTION) fixes the decimals, else they follow size."""
    return units.fmt(v, unit)


def _label(m: str) -> str:
    return metric_label(m).replace("\n", "/").replace("$", "")


def _md_table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def _summary(c: Collection) -> list[str]:
    t, info = c.table, cells(c.table)
    out = ["## Rows", "",
           f"- complete cells: **{len(info)}**; failed cells: **{len(c.failed)}**; files skipped: **{len(c.skipped)}**",
           f"- metric rows in the table: {len(t)} (`table.parquet`, `table.csv`; failed cells: `failed.csv`)"]
    if len(info):
        out.append(f"- compute: {info['wall_s'].sum() / 3600:.2f} wall-clock hours, "
                   f"{info['gpu_hours'].fillna(0).sum():.2f} GPU hours in all")
        shas = sorted(info["git_sha"].dropna().astype(str).unique())
        if len(shas) > 1:
            out.append(f"- rows come from {len(shas)} code versions (git {', '.join(s[:8] for s in shas)}): "
                       "differences may be code, not design")
        out += ["", "Values per axis (number of cells):", ""]
        out += _md_table(["axis", "values"], [[a, ", ".join(f"{v} ({n})" for v, n in
                                                            info[a].astype(str).value_counts().sort_index().items())]
                                             for a in c.axes if a in info and info[a].notna().any()])
        per_metric = t.groupby("metric")["cell_id"].nunique()
        out += ["", "Metrics (number of cells reporting each): " +
                ", ".join(f"`{m}` ({n})" for m, n in per_metric.items())]
    return out + [""]


def _problems(c: Collection) -> list[str]:
    out = ["## Problems", ""]
    if not (c.skipped or c.notes or len(c.failed)):
        return out + ["None: every row was read and every cell completed.", ""]
    for p, why in c.skipped:
        out.append(f"- skipped `{p}`: {why}")
    out += [f"- {n}" for n in c.notes]
    if len(c.failed):
        out += ([""] if out[-1] else []) + ["Failed cells:", ""]
        axes = [a for a in c.axes if a in c.failed]
        out += _md_table(["cell", *axes, "error"], [[r["cell_id"], *[r[a] for a in axes], r["error"]]
                                                    for _, r in c.failed.iterrows()])
    return out + [""]


def _figure_section(r: figures.FigureResult, out: Path) -> list[str]:
    lines = [f"### {r.title}", ""]
    if not r.drawn:
        return lines + [f"**{r.message}**", ""] + [f"- {m}" for m in r.missing] + [""]
    png = r.files["png"].relative_to(out)
    lines += [f"![{r.name}]({png}) ([SVG]({r.files['svg'].relative_to(out)}))", "",
              f"Held fixed: {describe(r.held_fixed)}. Baseline: **{r.axis}={r.baseline}**. "
              "Cells: mean over seeds [95% CI]; **\\*** = differs from the baseline (Holm-adjusted p < 0.05, "
              f"{int(r.data['p'].notna().sum())} comparisons in this figure).", ""]
    d = r.data
    rows = []
    for m in r.metrics:
        row, unit = [_label(m)], r.units.get(m)
        for a in r.arms:
            x = d[(d.arm.astype(str) == str(a)) & (d.metric == m)]
            if x.empty:
                row.append("–")
                continue
            x = x.iloc[0]
            ci = f" [{_fmt(x.ci_low, unit)}, {_fmt(x.ci_high, unit)}]" if not math.isnan(x.ci_low) else ""
            row.append(_fmt(x["mean"], unit) + ci + (SIG if x.significant else ""))
        rows.append(row)
    lines += _md_table(["metric", *[f"{a} (baseline)" if str(a) == str(r.baseline) else str(a) for a in r.arms]],
                       rows)
    seeds = d.groupby(d.arm.astype(str))["n_seeds"].max()
    lines += ["", "Seeds per arm: " + ", ".join(f"{a}: {seeds.get(str(a), 0)}" for a in r.arms) + ".", ""]
    tests = d[~d.is_baseline]
    lines += ["<details><summary>Differences from the baseline, p-values and the tests used</summary>", ""]
    lines += _md_table(["arm", "metric", "Δ vs baseline", "p", "p (Holm)", "significant", "CI from", "test"],
                       [[t.arm, _label(t.metric), _fmt(t["diff"], r.units.get(t.metric)), _fmt(t.p), _fmt(t.p_holm),
                         "yes" if t.significant else "no", t.ci_basis, t.test] for _, t in tests.iterrows()])
    lines += ["", "</details>", ""]
    if r.missing:
        lines += ["Missing or left out:", ""] + [f"- {m}" for m in r.missing] + [""]
    return lines + [f"- note: {n}" for n in r.notes] + ([""] if r.notes else [])


def _compute_section(table: pd.DataFrame, out: Path, metric: str | None) -> list[str]:
    lines = ["## Accuracy versus compute", ""]
    for x, name in (("auto", "compute"), ("train_flops", "compute_flops")):
        r = compute.accuracy_vs_compute(table, metric, x, out / "figures", name)
        if not r.drawn:
            lines.append(f"**{r.message}**")
            _say(f"compute plot ({x}): {r.message}")
            break
        front = r.data[r.data.on_front].sort_values("x")
        unit = units.metric_units(table[table.metric == r.metric]).get(r.metric)
        lines += [f"![{name}](figures/{name}.png)", "",
                  f"x: {compute.X_LABELS.get(r.x, r.x)}; y: {_label(r.metric)}; "
                  f"Pareto front ({len(front)} of {len(r.data)} settings): " +
                  "; ".join(f"{f.label} ({_fmt(f.y, unit)})" for _, f in front.iterrows()), ""]
        if r.message:
            lines += [r.message, ""]
    return lines


def _paper_tables(table: pd.DataFrame, out: Path) -> list[str]:
    lines = ["## Tables 2 and 3 (the paper's published rows, then this project's cells)", ""]
    for which in ("table2", "table3"):
        df, notes = paper.build(table, which)
        tex = out / "tables" / f"{which}.tex"
        tex.parent.mkdir(parents=True, exist_ok=True)
        tex.write_text(paper.to_latex(df, which))
        (out / "tables" / f"{which}.md").write_text(paper.to_markdown(df, which))
        lines += [f"### {paper.TABLES[which][1]}", "", paper.to_markdown(df, which),
                  f"LaTeX: `tables/{which}.tex`. `*` / `†` as in the paper; – = not reported.", ""]
        lines += [f"- {n}" for n in notes] + [""]
    return lines


def _calibration(results: list) -> list[str]:
    n_seeds = max([int(r.data["n_seeds"].max()) for r in results if r.drawn and len(r.data)] or [1])
    chk = stats.identical_arms_check(n_sweeps=2000, n_seeds=min(n_seeds, 10))
    return ["## How the statistics are made", "",
            "- CI: percentile bootstrap over questions (one seed) or hierarchical (seeds, then questions) when the "
            "metric is the mean of its per-question scores; otherwise a t interval over seeds; none with one seed.",
            "- Test vs baseline: paired t-test on per-seed differences (matched seeds); with one matched seed a "
            "sign-flip permutation test over paired questions, which cannot see seed noise.",
            f"- Identical-arms check ({chk['n_sweeps']} simulated sweeps, {chk['n_seeds']} seed(s), two arms "
            f"differing only by seed noise, test: {chk['test']}): false-positive rate "
            f"**{chk['false_positive_rate']:.3f}** at alpha {chk['alpha']}.", ""]


def write_report(root: Path, out: Path, baselines: dict, metric: str | None = None) -> int:
    """Write `out/report.md` and its files; returns the exit code."""
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # collect's warning is reported below, once, in our words
        c = collect(root)
    for p, why in c.skipped:
        _say(f"skipped {p}: {why}")
    lines = [f"# ablate report: `{root}`", ""]
    if c.n_read == 0:
        msg = (f"no result rows could be read under {root}/cells/*/result.json"
               + (f" ({len(c.skipped)} file(s) skipped, see below)" if c.skipped else " (none found)"))
        _say("error: " + msg)
        (out / "report.md").write_text("\n".join(lines + [f"**{msg}**", ""] + _problems(c)) + "\n")
        return 1
    save(c, out)
    lines += _summary(c) + _problems(c)
    lines += ["## Figures", ""]
    results = figures.all_figures(c.table, out / "figures", baselines, failed=c.failed)
    for r in results:
        if not r.drawn:
            _say(f"{r.name}: {r.message}")
        lines += _figure_section(r, out)
    lines += _compute_section(c.table, out, metric)
    lines += _paper_tables(c.table, out)
    # the cells a figure wanted and did not get; cells it merely did not need are listed in its own section
    missing = [(r.name, m) for r in results for m in r.missing if "not used by this figure" not in m]
    lines += ["## Missing cells", ""] + ([f"- {n}: {m}" for n, m in missing] or ["Nothing missing."]) + [""]
    lines += _calibration(results)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _say(f"wrote {out / 'report.md'}")
    return 0


def _baselines(items: list[str], parser: argparse.ArgumentParser) -> dict:
    axes = {s.axis for s in figures.FIGURES}
    out = {}
    for item in items:
        axis, sep, value = item.partition("=")
        if not sep or axis not in axes:
            parser.error(f"--baseline {item!r}: expected AXIS=VALUE with AXIS one of {', '.join(sorted(axes))}")
        out[axis] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("ABLATE_ROOT", "runs"),
                        help="results root holding cells/*/result.json (default: $ABLATE_ROOT or runs)")
    parser.add_argument("--out", default=None, help="output directory (default: ROOT/report)")
    parser.add_argument("--baseline", action="append", default=[], metavar="AXIS=VALUE",
                        help="baseline arm of the figures of AXIS (default: phi2, siglip, 336, train_both, full)")
    parser.add_argument("--metric", default=None, help="y of the compute plot (default: most reported headline)")
    args = parser.parse_args(argv)
    baselines = _baselines(args.baseline, parser)
    root = Path(args.root)
    if not root.is_dir():
        _say(f"error: results root {root} does not exist or is not a directory (set --root or ABLATE_ROOT)")
        return 1
    return write_report(root, Path(args.out) if args.out else root / "report", baselines, args.metric)


if __name__ == "__main__":
    sys.exit(main())
