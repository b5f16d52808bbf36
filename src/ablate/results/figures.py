"""The paper's Figures 2-5 as grouped bar charts (benchmarks x arms) with 95% CIs and significance marks.

One function per paper figure; each picks its arms from whatever rows exist (`select.select_arms`),
computes means, CIs and Holm-corrected tests against a baseline arm (`compare.summarize`), draws, saves
PNG + SVG, and returns a `FigureResult` holding the plotted numbers, so tests and the report never
re-derive them. A figure that cannot be drawn (no cells, one arm) returns `drawn=False` and a message.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                     # files only: no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import compare, paper, units  # noqa: E402
from .select import describe, select_arms  # noqa: E402

INSTRUCT = ("phi2", "phi2_sft", "phi2_rlhf", "phi2_safe_rlhf")
_LEAF_PREFERENCE = ("accuracy", "img_accuracy", "circular_accuracy", "f1", "total", "score")
# The synthetic suite's benchmarks stand in for the paper's (VQAv2, TextVQA, POPE, MMBench), so they come in
# the paper's order, then the held-out QA; other benchmarks follow alphabetically. The first is also the
# compute plot's default metric.
_BENCH_ORDER = ("synth_vqa", "synth_text", "synth_pope", "synth_mmb", "synth_qa")


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    axis: str
    expected: tuple                   # the values the paper compares, in its order
    baseline: object                  # default baseline arm (the Mipha choice, or LLaVA-1.5's 336 px)
    include: tuple | None = None      # only these values (Fig. 3)
    exclude: tuple = ()               # never these values (Fig. 2 leaves Fig. 3's variants out)


FIGURES = (
    FigureSpec("fig2_lm", "Fig. 2: choice of small language model", "lm",
               ("phi2", "phi15", "qwen15_1_8b", "stablelm_1_6b", "pythia_1_4b", "pythia_2_8b"), "phi2",
               exclude=INSTRUCT[1:]),
    FigureSpec("fig3_instruct", "Fig. 3: base vs SFT vs RLHF vs Safe-RLHF language model", "lm", INSTRUCT,
               "phi2", include=INSTRUCT),
    FigureSpec("fig4_encoder", "Fig. 4 (left): pretrained visual backbone", "encoder",
               ("clip", "siglip", "dinov2", "vit_in21k"), "siglip"),
    FigureSpec("fig4_resolution", "Fig. 4 (middle): image resolution", "resolution", (224, 336, 448), 336),
    FigureSpec("fig5_freeze", "Fig. 5 (left): frozen vs trained encoder and LM (stage 2)", "freeze",
               ("frozen_both", "train_encoder", "train_lm", "train_both"), "train_both"),
    FigureSpec("fig5_lora", "Fig. 5 (right): full fine-tuning vs LoRA", "tuning", ("full", "lora"), "full"),
)


@dataclass
class FigureResult:
    name: str
    title: str
    axis: str
    drawn: bool
    message: str = ""                                      # why not drawn, or "" when drawn
    arms: list = field(default_factory=list)
    baseline: object = None
    held_fixed: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=compare.SUMMARY_COLUMNS))
    missing: list = field(default_factory=list)            # absent arms, left-out cells, absent metrics
    notes: list = field(default_factory=list)              # statistics caveats
    files: dict = field(default_factory=dict)              # {"png": Path, "svg": Path}
    marks: list = field(default_factory=list)              # (arm, metric) pairs drawn with a '*'
    units: dict = field(default_factory=dict)              # metric -> units.PERCENT | FRACTION | RAW
    references: dict = field(default_factory=dict)         # metric -> what an image-blind answerer scores



def figure_metrics(metric_names) -> list[str]:
    """The benchmarks' headline metrics: the paper's where known (one per paper column), else one per
    benchmark by leaf preference -- F1 for POPE-like benchmarks, as the paper reports POPE."""
    names = sorted({m for m in metric_names if m.startswith("eval/")})
    out = [m for m in (paper.find_metric(names, c) for c in paper.COLUMNS) if m]
    covered = {m.split("/")[1] for m in out}
    by_bench: dict[str, list[str]] = {}
    for m in names:
        if m.split("/")[1] not in covered and m.count("/") >= 2:
            by_bench.setdefault(m.split("/")[1], []).append(m)
    def order(item):
        bench = item[0]
        return (_BENCH_ORDER.index(bench) if bench in _BENCH_ORDER else len(_BENCH_ORDER), bench)

    for bench, ms in sorted(by_bench.items(), key=order):
        leaves = {m.split("/", 2)[2]: m for m in ms}
        prefer = ("f1",) + _LEAF_PREFERENCE if "pope" in bench else _LEAF_PREFERENCE
        out.append(next((leaves[x] for x in prefer if x in leaves), ms[0]))
    return out


def metric_label(m: str) -> str:
    if m in paper.METRIC_LABELS:          # SQA^I -> mathtext superscript, as the paper prints it
        label = paper.METRIC_LABELS[m].replace("^I", "$^I$").replace("^T", "$^T$")
        return label + ("-F1" if m.endswith("/f1") else "")
    parts = m.split("/")
    return "\n".join(parts[1:]) if parts[0] == "eval" else m


def _failed_lines(failed: pd.DataFrame | None, axis: str, held: dict, spec: FigureSpec) -> list[str]:
    """Failed cells that would have been arms of this figure (same setting of the other axes)."""
    if failed is None or failed.empty or axis not in failed:
        return []
    f = failed
    for a, v in held.items():
        f = f[f[a].astype(str) == str(v)] if a in f else f
    f = f[~f[axis].astype(str).isin([str(v) for v in spec.exclude])]
    if spec.include is not None:
        f = f[f[axis].astype(str).isin([str(v) for v in spec.include])]
    return [f"{axis}={r[axis]} seed {r['seed']} (cell {r['cell_id']}): failed ({r['error']})" for _, r in f.iterrows()]


def axis_figure(table: pd.DataFrame, spec: FigureSpec, out_dir=None, baseline=None, alpha: float = 0.05,
                n_boot: int = 2000, test: str = "auto", failed: pd.DataFrame | None = None) -> FigureResult:
    """Select, compare and draw one figure; `baseline` overrides the spec's default arm; `failed` (the
    table's failed cells) lets the figure say which of its missing arms failed rather than never ran."""
    res = FigureResult(spec.name, spec.title, spec.axis, drawn=False)
    sel = select_arms(table, spec.axis, spec.expected, spec.include, spec.exclude)
    res.arms, res.held_fixed = sel.arms, sel.held_fixed
    res.missing = list(sel.missing) + _failed_lines(failed, spec.axis, sel.held_fixed, spec)
    if len(sel.arms) < 2:
        res.message = (f"not drawn: {spec.axis} has " + (f"only one value ({sel.arms[0]})" if sel.arms else
                       "no cells") + " under any one setting of the other axes; a comparison needs two or more")
        return res
    wanted = baseline if baseline is not None else spec.baseline
    base = next((a for a in sel.arms if str(a) == str(wanted)), sel.arms[0])
    if str(base) != str(wanted):
        res.missing.append(f"baseline {spec.axis}={wanted} has no cells here; compared against {base} instead")
    res.baseline = base
    res.metrics = figure_metrics(sel.table["metric"].unique())
    if not res.metrics:
        res.message = "not drawn: the selected cells have no eval/ metrics"
        return res
    res.data, res.notes = compare.summarize(sel.table, spec.axis, sel.arms, base, res.metrics, alpha, n_boot, test)
    res.units = units.metric_units(sel.table[sel.table["metric"].isin(res.metrics)])
    res.references = _blind_references(sel.table, res.metrics, res.notes)
    for m in res.metrics:
        lacking = [str(a) for a in sel.arms if not ((res.data.arm.astype(str) == str(a)) & (res.data.metric == m)).any()]
        if lacking:
            res.missing.append(f"{metric_label(m).replace(chr(10), '/')}: no value for {spec.axis}={', '.join(lacking)}")
    res.drawn = True
    if out_dir is not None:
        res.files = draw(res, Path(out_dir))
    return res


def _blind_references(table: pd.DataFrame, metrics: list[str], notes: list[str]) -> dict:
    """metric -> the score of answering without the image, where the benchmark reports one next to it
    (`eval/<bench>/blind_<leaf>` beside `eval/<bench>/<leaf>`: the synthetic held-out set's per-type most
    frequent answer). Bars near that line do not use the image."""
    out = {}
    for m in metrics:
        parts = m.split("/", 2)
        if len(parts) < 3:
            continue
        vals = table.loc[table["metric"] == f"{parts[0]}/{parts[1]}/blind_{parts[2]}", "value"].dropna()
        if vals.empty:
            continue
        out[m] = float(vals.mean())
        if vals.max() - vals.min() > 1e-9:
            notes.append(f"{m}: the image-blind score differs across cells ({vals.min():g} to {vals.max():g}: "
                         "different evaluation sets?); the line is drawn at their mean")
    return out


def _panels(data: pd.DataFrame, metrics: list[str], unit_of: dict) -> list[tuple[str, list[str]]]:
    """Group metrics that share a scale into one axes: fractions, percentages, then each other metric alone.
    The unit comes from units.metric_units (per-question evidence, the row contract), not from the bars'
    heights: a column of 0 % accuracies is not a fraction."""
    frac = [m for m in metrics if unit_of.get(m) == units.FRACTION]
    pct = [m for m in metrics if unit_of.get(m) == units.PERCENT]
    rest = [m for m in metrics if m not in frac and m not in pct]
    out = [("score (fraction)", frac)] if frac else []
    out += [("score (%)", pct)] if pct else []
    return out + [("score", [m]) for m in rest]


def draw(res: FigureResult, out_dir: Path) -> dict:
    """Grouped bars per panel: x = benchmarks, one colour per arm, 95% CI whiskers, '*' = significant."""
    out_dir.mkdir(parents=True, exist_ok=True)
    res.marks = []
    panels = _panels(res.data, res.metrics, res.units)
    n_arms = len(res.arms)
    widths = [max(1.3, len(ms) * (0.2 * n_arms + 0.35)) for _, ms in panels]
    fig_w = min(max(sum(widths) + 0.9 * len(panels), 7.0), 18.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, 5.0), width_ratios=widths, squeeze=False,
                             layout="constrained")
    colors = plt.get_cmap("tab10").colors
    handles = []
    for k, (ax, (ylabel, ms)) in enumerate(zip(axes[0], panels)):
        bar_w = 0.8 / n_arms
        top = 0.0
        for i, arm in enumerate(res.arms):
            d = res.data[res.data.arm.astype(str) == str(arm)].set_index("metric").reindex(ms)
            xs = [j + (i - (n_arms - 1) / 2) * bar_w for j in range(len(ms))]
            # NaN where there is no CI: matplotlib then draws no whisker (a zero would draw a cap)
            err = [(d["mean"] - d["ci_low"]).clip(lower=0), (d["ci_high"] - d["mean"]).clip(lower=0)]
            is_base = str(arm) == str(res.baseline)
            h = ax.bar(xs, d["mean"], bar_w * 0.92, color=colors[i % 10], yerr=err, capsize=2,
                       hatch="//" if is_base else None, edgecolor="black" if is_base else "none", linewidth=0.6,
                       error_kw={"elinewidth": 0.9}, label=f"{res.axis}={arm}" + (" (baseline)" if is_base else ""))
            if k == 0:                      # one legend entry per arm, taken from the first panel
                handles.append(h)
            for x, m, mean, hi, sig in zip(xs, ms, d["mean"], d["ci_high"], d["significant"]):
                peak = hi if pd.notna(hi) else mean
                top = max(top, peak if pd.notna(peak) else 0.0)
                if mean == 0:               # a zero bar has no height: say "0" so it never reads as missing
                    ax.text(x, 0, "0", ha="center", va="bottom", fontsize=7, color=colors[i % 10])
                if pd.notna(sig) and bool(sig):
                    ax.text(x, peak, "*", ha="center", va="bottom", fontsize=12, fontweight="bold")
                    res.marks.append((arm, m))
        for j, m in enumerate(ms):
            if m in res.references:
                ref = res.references[m]
                h = ax.hlines(ref, j - 0.45, j + 0.45, colors="0.2", linestyles="--", linewidth=1.3, zorder=3,
                              label="image-blind score")
                top = max(top, ref)
                if not any(x.get_label() == h.get_label() for x in handles):
                    handles.append(h)
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels([metric_label(m) for m in ms], rotation=30 if len(ms) > 6 else 0,
                           ha="right" if len(ms) > 6 else "center", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
        ax.set_xlim(-0.6, len(ms) - 0.4)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
    # legend outside the axes, below them: it never covers a bar and never collides with the title
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=9, frameon=False)
    # title block: what is compared, what is held fixed, how to read marks (the legend sits below the axes)
    caption = ["95% CI whiskers", "* = differs from baseline (Holm-adjusted p < 0.05)"]
    if res.references:
        caption.append("dashed line = image-blind score (each question type's most frequent answer)")
    if res.data["ci_low"].isna().any():
        caption.append("no whisker = no CI (one seed, metric not a per-question mean)")
    absent = [m.split(":")[0] for m in res.missing if m.endswith("no complete cells")]
    if absent:
        caption.append("no cells for " + ", ".join(absent))
    width = int(fig_w * 11)
    lines = [res.title] + textwrap.wrap("held fixed: " + describe(res.held_fixed), width) + \
        textwrap.wrap("; ".join(caption), width, break_on_hyphens=False)
    fig.suptitle("\n".join(lines), fontsize=9.5)
    files = {"png": out_dir / f"{res.name}.png", "svg": out_dir / f"{res.name}.svg"}
    fig.savefig(files["png"], dpi=150)
    fig.savefig(files["svg"])
    plt.close(fig)
    return files


def _spec(name: str) -> FigureSpec:
    return next(s for s in FIGURES if s.name == name)


def fig2_lm(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 2: small LMs compared (the instruction-tuned Phi-2 variants are Fig. 3's)."""
    return axis_figure(table, _spec("fig2_lm"), out_dir, **kw)


def fig3_instruct(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 3: Phi-2 base vs SFT vs RLHF vs Safe-RLHF."""
    return axis_figure(table, _spec("fig3_instruct"), out_dir, **kw)


def fig4_encoder(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 4 left: CLIP vs SigLIP vs DINOv2 vs ViT-IN21K."""
    return axis_figure(table, _spec("fig4_encoder"), out_dir, **kw)


def fig4_resolution(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 4 middle: input resolution."""
    return axis_figure(table, _spec("fig4_resolution"), out_dir, **kw)


def fig5_freeze(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 5 left: which of encoder / LM train in stage 2."""
    return axis_figure(table, _spec("fig5_freeze"), out_dir, **kw)


def fig5_lora(table, out_dir=None, **kw) -> FigureResult:
    """Fig. 5 right: full fine-tuning vs LoRA."""
    return axis_figure(table, _spec("fig5_lora"), out_dir, **kw)


def all_figures(table, out_dir=None, baselines: dict | None = None, **kw) -> list[FigureResult]:
    """Every figure; `baselines` maps an axis to its baseline value (e.g. {"lm": "phi15"})."""
    baselines = baselines or {}
    return [axis_figure(table, s, out_dir, baseline=baselines.get(s.axis), **kw) for s in FIGURES]

