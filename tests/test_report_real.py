"""The results package on rows the runner really writes: a tiny `tuning=full,lora x seed=0,1` sweep.

The other results tests use hand-made rows; these check the seams with the real producer: eval metrics in
percent (so units must not be guessed from size), metric names as ablate.eval writes them
(`eval/synth_pope/f1`, ...), per-question files whose mean is the metric, the stage-1 artifact shared by
two cells. Every number the report shows is recomputed here from the rows.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import FAST, SMALL_DATA, ablate_cmd

BENCHES = ["synth_qa", "synth_vqa", "synth_pope", "synth_mmb"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Four real cells (~1 min each on a loaded 2-core CPU, in one process) and their report."""
    root = tmp_path_factory.mktemp("real") / "runs"
    cmd = ablate_cmd("-m", "tuning=full,lora", "seed=0,1", *FAST, *SMALL_DATA, f"paths.root={root}",
                     "scale.stage1.max_steps=2", "scale.stage2.max_steps=3", "eval.max_questions=6",
                     f"eval.benchmarks=[{','.join(BENCHES)}]")
    p = subprocess.run(cmd, cwd=root.parent, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "ablate.report", "--root", str(root)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def _rows(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("cells/*/result.json"))]


def _value(rows, tuning, seed, metric):
    (row,) = [r for r in rows if r["axes"]["tuning"] == tuning and r["axes"]["seed"] == seed]
    return row["metrics"][metric]


@pytest.mark.slow
def test_rows_are_what_the_results_package_expects(sweep):
    rows = _rows(sweep)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"complete"}
    assert len({r["stage1_id"] for r in rows}) == 2                 # one stage 1 per seed, shared by both tunings
    for r in rows:
        for b in BENCHES:
            acc = "f1" if b == "synth_pope" else "accuracy"
            assert f"eval/{b}/{acc}" in r["metrics"], sorted(r["metrics"])
            assert 0.0 <= r["metrics"][f"eval/{b}/{acc}"] <= 100.0
        # the runner's percent contract: accuracy = 100 x mean of the per-question scores
        scores = [json.loads(x)["score"] for x in (sweep / "cells" / r["cell_id"] / r["per_question"]["synth_vqa"])
                  .read_text().splitlines()]
        assert r["metrics"]["eval/synth_vqa/accuracy"] == pytest.approx(100 * np.mean(scores))


@pytest.mark.slow
def test_table_holds_every_row_number(sweep):
    from ablate.results import collect

    c = collect(sweep)
    rows = _rows(sweep)
    assert c.n_read == 4 and c.failed.empty and not c.skipped
    for r in rows:
        got = c.table[c.table.cell_id == r["cell_id"]].set_index("metric")["value"]
        want = {k: v for k, v in r["metrics"].items() if v is not None}
        assert got.to_dict() == pytest.approx(want)
        cell = c.table[c.table.cell_id == r["cell_id"]].iloc[0]
        assert (cell.tuning, cell.seed, cell.resolution) == (r["axes"]["tuning"], r["axes"]["seed"], 224)
        assert cell.wall_s == pytest.approx(r["compute"]["wall_s"]["total"])
        assert cell.trainable_params == r["params"]["stage2"]["trainable"]
    csv = pd.read_csv(sweep / "report" / "table.csv")               # what the report wrote = what collect reads
    assert len(csv) == len(c.table) and csv["value"].sum() == pytest.approx(c.table["value"].sum())


@pytest.mark.slow
def test_units_are_percent_whatever_the_values(sweep):
    """Tiny cells often score 0 %: a column of zeros must stay percent (the old size rule made it a fraction)."""
    from ablate.results import collect, units

    t = collect(sweep).table
    u = units.metric_units(t)
    assert {u[m] for m in t.metric.unique() if m.startswith("eval/")} == {units.PERCENT}
    assert u["train/stage2/loss"] == units.RAW
    assert units.fmt(0.0, units.PERCENT) == "0.0" and units.fmt(66.66667, units.PERCENT) == "66.7"


@pytest.mark.slow
def test_fig5_lora_numbers_are_the_rows(sweep):
    from ablate.results import collect, figures

    t = collect(sweep).table
    res = figures.fig5_lora(t)
    assert res.drawn and res.arms == ["full", "lora"] and res.baseline == "full"
    assert res.held_fixed == {"encoder": "siglip", "resolution": 224, "lm": "phi2", "freeze": "train_both",
                              "data": "synthetic", "scale": "tiny"}
    rows = _rows(sweep)
    assert set(res.metrics) == {"eval/synth_qa/accuracy", "eval/synth_vqa/accuracy", "eval/synth_pope/f1",
                                "eval/synth_mmb/accuracy"}
    d = res.data.set_index(["arm", "metric"])
    for m in res.metrics:
        per_seed = {a: [_value(rows, a, s, m) for s in (0, 1)] for a in ("full", "lora")}
        for a in ("full", "lora"):
            x = d.loc[(a, m)]
            assert x["n_seeds"] == 2 and x["mean"] == pytest.approx(np.mean(per_seed[a]))
            if not np.isnan(x.ci_low):
                assert x.ci_low - 1e-9 <= x["mean"] <= x.ci_high + 1e-9
        diffs = np.subtract(per_seed["lora"], per_seed["full"])
        x = d.loc[("lora", m)]
        assert x["diff"] == pytest.approx(diffs.mean()) and x.test == "paired t over 2 seeds"
        if np.ptp(diffs) > 0:
            # paired t over two seeds: t = mean / (sd / sqrt 2) on 1 degree of freedom, whose t distribution
            # is the Cauchy one, so the two-sided p is 1 - 2 atan(|t|) / pi
            t_stat = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(2))
            assert x.p == pytest.approx(1 - 2 * np.arctan(abs(t_stat)) / np.pi)
    # POPE F1 is not a mean over questions: no question bootstrap; accuracies are
    assert d.loc[("full", "eval/synth_pope/f1"), "ci_basis"] in ("seeds (t)",)
    assert d.loc[("full", "eval/synth_vqa/accuracy"), "ci_basis"] == "seeds+questions"
    # all four metrics are percentages: one panel, whatever their heights
    assert figures._panels(res.data, res.metrics, res.units) == [("score (%)", res.metrics)]


@pytest.mark.slow
def test_report_page_shows_the_same_numbers(sweep):
    from ablate.results import collect, compute

    md = (sweep / "report" / "report.md").read_text()
    rows = _rows(sweep)
    assert "complete cells: **4**; failed cells: **0**" in md
    section = md.split("### Fig. 5 (right)")[1].split("###")[0]
    for m, label in (("eval/synth_vqa/accuracy", "synth_vqa/accuracy"), ("eval/synth_pope/f1", "synth_pope/f1")):
        (line,) = [x for x in section.splitlines() if x.startswith(f"| {label} |")]
        cells = [c.strip() for c in line.strip("|").split("|")]
        for col, arm in ((1, "full"), (2, "lora")):
            mean = np.mean([_value(rows, arm, s, m) for s in (0, 1)])
            assert cells[col].split(" ")[0] == f"{mean:.1f}", (line, mean)     # percent: one decimal
    assert (sweep / "report" / "figures" / "fig5_lora.png").stat().st_size > 10_000
    # accuracy vs compute: one point per tuning, y = mean over seeds, x = mean wall-clock hours
    t = collect(sweep).table
    r = compute.accuracy_vs_compute(t)
    pts = r.data.set_index("tuning")
    # the cell that trained a stage-1 artifact timed it; the cell that reused it reports 0 s and is charged it
    s1_time = {}
    for x in rows:
        s1_time[x["stage1_id"]] = max(s1_time.get(x["stage1_id"], 0.0), x["compute"]["wall_s"]["stage1"])
    assert sorted(x["compute"]["stage1_shared"] for x in rows) == [False, False, True, True]
    for arm in ("full", "lora"):
        cells = [x for x in rows if x["axes"]["tuning"] == arm]
        hours = [(x["compute"]["wall_s"]["total"] - x["compute"]["wall_s"]["stage1"] + s1_time[x["stage1_id"]]) / 3600
                 for x in cells]
        assert pts.loc[arm, "y"] == pytest.approx(np.mean([x["metrics"][r.metric] for x in cells]))
        assert pts.loc[arm, "x"] == pytest.approx(np.mean(hours))
    assert f"y: {r.metric.split('/', 1)[1]}" in md
    # synthetic benchmarks are not the paper's: Tables 2/3 show no project row and say why
    assert "no cell reports any of this table's benchmarks" in md


# ---- units without a sweep: the cases the size rule got wrong, from hand-made rows ---------------------------

def test_units_follow_per_question_evidence_not_size(tmp_path):
    from rowfactory import binary_scores, write_row

    from ablate.results import collect, units

    # 1 of 200 right = 0.5 %: under 1, yet a percentage (the per-question mean is 0.005)
    real, hand = tmp_path / "real", tmp_path / "hand"
    s = binary_scores(200, 0.005)
    write_row(real, {"seed": 0}, {"eval/synth_vqa/accuracy": 0.5, "eval/synth_vqa/answer_type/other": 0.0,
                                  "eval/mme/perception": 0.8, "eval/synth_mmb/accuracy": 0.5}, {"synth_vqa": s})
    u = units.metric_units(collect(real).table)
    assert u["eval/synth_vqa/accuracy"] == u["eval/synth_vqa/answer_type/other"] == units.PERCENT
    assert u["eval/mme/perception"] == units.RAW                       # MME: a sum, never rescaled
    # CircularEval is no per-question mean, so synth_mmb has no evidence of its own: it follows the root
    assert u["eval/synth_mmb/accuracy"] == units.PERCENT
    # hand-written fractions with their per-question file still read as fractions, and so does their root
    write_row(hand, {"seed": 1}, {"eval/gqa/accuracy": 0.25, "eval/pope/f1": 0.7}, {"gqa": binary_scores(8, 0.25)})
    u = units.metric_units(collect(hand).table)
    assert u["eval/gqa/accuracy"] == u["eval/pope/f1"] == units.FRACTION


def test_units_zero_column_is_percent_and_tables_keep_percent(tmp_path):
    from rowfactory import write_row

    from ablate.results import collect, paper, units

    for seed, acc in ((0, 0.0), (1, 0.6)):          # rows without per-question files: only sizes to go by
        write_row(tmp_path, {"seed": seed}, {"eval/vqav2/accuracy": acc, "eval/textvqa/accuracy": 0.0,
                                             "eval/gqa/accuracy": 40.0})
    t = collect(tmp_path).table
    u = units.metric_units(t)
    assert u["eval/textvqa/accuracy"] == units.PERCENT and u["eval/gqa/accuracy"] == units.PERCENT
    # the limit of the fallback: values in [0, 1] with no per-question file read as fractions (the runner
    # always writes the files, so its rows never land here)
    assert u["eval/vqav2/accuracy"] == units.FRACTION
    mine = paper.build(t, "table2")[0].query("group == 'ablate'").iloc[0]
    assert (mine.gqa, mine.textvqa) == ("40.0", "0.0")


def test_compute_charges_a_shared_stage1_to_every_cell_using_it(tmp_path):
    from rowfactory import write_row

    from ablate.results import collect, compute

    # full trained stage 1 (100 s) and its own stage 2; lora reused it (0 s) -- same recipe cost for stage 1
    for tuning, s1, shared, acc in (("full", 100.0, False, 50.0), ("lora", 0.0, True, 40.0)):
        p = write_row(tmp_path, {"tuning": tuning}, {"eval/synth_vqa/accuracy": acc},
                      compute={"wall_s": {"stage1": s1, "stage2": 200.0, "eval": 10.0, "total": s1 + 210.0},
                               "stage1_shared": shared, "gpu_hours": 0.0})
        row = json.loads(p.read_text())
        p.write_text(json.dumps({**row, "stage1_id": "s1abc"}))
    r = compute.accuracy_vs_compute(collect(tmp_path).table)
    x = r.data.set_index("tuning")["x"]
    assert r.x == "wall_hours" and x["full"] == pytest.approx(310 / 3600) and x["lora"] == pytest.approx(310 / 3600)
    # equal cost, full more accurate: lora is dominated (before, lora looked 100 s cheaper and sat on the front)
    assert list(r.data.set_index("tuning").on_front[["full", "lora"]]) == [True, False]
