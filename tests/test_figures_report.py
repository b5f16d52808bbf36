"""Tests of the figures, the paper tables, the compute plot and the report command, on rows with known numbers."""
import math

import pytest

from ablate import report
from ablate.results import compute, figures, paper
from ablate.results.table import collect, load_table
from rowfactory import binary_scores, write_arms, write_row


def test_freeze_figure_plots_the_row_means_and_marks_the_real_difference(tmp_path):
    write_arms(tmp_path, "freeze", {"frozen_both": [0.40, 0.42, 0.41], "train_lm": [0.60, 0.61, 0.62],
                                    "train_both": [0.61, 0.60, 0.62]}, n_questions=400)
    r = figures.fig5_freeze(load_table(tmp_path), tmp_path / "out")
    assert r.drawn and r.arms == ["frozen_both", "train_lm", "train_both"]      # the paper's order
    assert r.baseline == "train_both" and r.held_fixed["encoder"] == "siglip"
    d = r.data[r.data.metric == "eval/synth_vqa/accuracy"].set_index("arm")
    assert d.loc["frozen_both", "mean"] == pytest.approx(0.41)
    assert d.loc["train_lm", "mean"] == pytest.approx(0.61)
    assert d.loc["frozen_both", "significant"] and not d.loc["train_lm", "significant"]
    assert d.loc["frozen_both", "ci_low"] < 0.41 < d.loc["frozen_both", "ci_high"]
    assert r.metrics == ["eval/synth_vqa/accuracy"]                 # the loss is not a benchmark
    assert r.marks == [("frozen_both", "eval/synth_vqa/accuracy")]  # the star drawn is the test's verdict
    assert any("train_encoder: no complete cells" in m for m in r.missing)
    for f in r.files.values():
        assert f.stat().st_size > 5000


def test_each_figure_holds_the_other_axes_at_the_setting_with_most_arms(tmp_path):
    # an encoder sweep at 336 px and a resolution sweep with CLIP share one cell (clip, 336)
    write_arms(tmp_path, "encoder", {"clip": 0.6, "siglip": 0.7, "dinov2": 0.5}, seeds=(0,),
               base={"resolution": 336})
    write_arms(tmp_path, "resolution", {224: 0.62, 448: 0.58}, seeds=(0,), base={"encoder": "clip"})
    write_row(tmp_path, {"encoder": "vit_in21k", "resolution": 224}, {"eval/synth_vqa/accuracy": 0.3})
    t = load_table(tmp_path)
    enc = figures.fig4_encoder(t)
    assert enc.held_fixed["resolution"] == 336 and enc.arms == ["clip", "siglip", "dinov2"]
    assert any(m.startswith("encoder=vit_in21k: 1 cell(s), all under other settings") for m in enc.missing)
    res = figures.fig4_resolution(t)
    assert res.held_fixed["encoder"] == "clip" and res.arms == [224, 336, 448] and res.baseline == 336
    means = res.data.set_index("arm")["mean"]
    assert means[224] == pytest.approx(0.62) and means[336] == pytest.approx(0.6)


def test_one_value_axis_and_absent_axis_are_not_drawn_with_a_message(tmp_path):
    write_arms(tmp_path, "tuning", {"full": 0.6}, seeds=(0, 1))
    t = load_table(tmp_path)
    r = figures.fig5_lora(t, tmp_path / "out")
    assert not r.drawn and "only one value (full)" in r.message and not r.files
    assert "tuning=lora: no complete cells" in r.missing
    r3 = figures.fig3_instruct(t)                      # Fig. 3 has the base phi2 only
    assert not r3.drawn and "only one value (phi2)" in r3.message
    r3 = figures.fig3_instruct(t[t.lm != "phi2"])
    assert not r3.drawn and "has no cells" in r3.message


def test_fig3_and_fig2_split_the_lm_axis_and_failed_arms_are_named(tmp_path):
    write_arms(tmp_path, "lm", {"phi2": 0.6, "phi2_sft": 0.61, "phi15": 0.55}, seeds=(0,))
    write_row(tmp_path, {"lm": "phi2_rlhf"}, status="failed", error="OSError: no checkpoint")
    c = collect(tmp_path)
    f2, f3 = figures.fig2_lm(c.table, failed=c.failed), figures.fig3_instruct(c.table, failed=c.failed)
    assert f2.arms == ["phi2", "phi15"] and f3.arms == ["phi2", "phi2_sft"]
    assert any(m.startswith("lm=phi2_rlhf seed 0 (cell ") and m.endswith("failed (OSError: no checkpoint)")
               for m in f3.missing)
    assert not any("rlhf" in m for m in f2.missing if "failed" in m)


def test_single_seed_ci_matches_the_binomial_closed_form(tmp_path):
    write_arms(tmp_path, "tuning", {"full": 0.7, "lora": 0.5}, seeds=(0,), n_questions=2000)
    r = figures.fig5_lora(load_table(tmp_path), n_boot=20000)
    full = r.data.set_index("arm").loc["full"]
    half = 1.96 * math.sqrt(0.7 * 0.3 / 2000)
    assert (full.ci_low, full.ci_high) == pytest.approx((0.7 - half, 0.7 + half), abs=0.003)
    assert full.ci_basis == "questions"


def _paper_metrics_row(root, axes, vqav2, pope_f1, mme_p, **kw):
    write_row(root, axes, {"eval/vqav2/accuracy": vqav2, "eval/pope/f1": pope_f1, "eval/mme/perception": mme_p,
                           "eval/sqa/img_accuracy": 0.5}, **kw)


def test_paper_tables_put_user_cells_beside_the_published_rows(tmp_path):
    _paper_metrics_row(tmp_path, {"seed": 0}, 0.70, 0.80, 1200.0)
    _paper_metrics_row(tmp_path, {"seed": 1}, 0.72, 0.84, 1300.0)
    t = load_table(tmp_path)
    t2, notes2 = paper.build(t, "table2")
    mipha = t2[t2.method == "Mipha-3B"].iloc[0]
    assert (mipha.vqav2, mipha.gqa, mipha.sqa_img) == ("81.3*", "63.9*", "70.9")
    mine = t2[t2.group == "ablate"].iloc[0]
    # fractions shown as the paper's percentages, mean over the 2 seeds; the alias eval/sqa/... is found
    assert (mine.vqav2, mine.sqa_img, mine.gqa, mine.llm, mine.resolution) == ("71.0", "50.0", "–", "phi2", "384")
    assert "(2 seeds)" in mine.method
    assert any(n.startswith("GQA: no cell reports it") for n in notes2)
    t3, _ = paper.build(t, "table3")
    mine3 = t3[t3.group == "ablate"].iloc[0]
    assert (mine3.pope, mine3.mme_perception, mine3.mmbench_cn) == ("82.0", "1250.0", "–")   # MME stays raw
    md, tex = paper.to_markdown(t3, "table3"), paper.to_latex(t3, "table3")
    assert "| 82.0 | 1250.0 |" in md and "This project" in md
    assert r"1.4B$^\dagger$" in tex and r"\bottomrule" in tex and "82.0 & 1250.0" in tex


def test_pareto_front_and_compute_axis_choice(tmp_path):
    assert list(compute.pareto_front([1, 2, 3, 2], [0.5, 0.7, 0.6, 0.4])) == [True, True, False, False]
    cost = {("a", 0): 1.0, ("b", 0): 2.0, ("c", 0): 3.0}
    write_arms(tmp_path, "encoder", {"a": 0.5, "b": 0.7, "c": 0.6}, seeds=(0,),
               compute_of=lambda v, s: {"gpu_hours": cost[(v, s)], "wall_s": {"total": 3600.0 * cost[(v, s)] * 2}})
    t = load_table(tmp_path)
    r = compute.accuracy_vs_compute(t, out_dir=tmp_path / "out")
    assert r.x == "gpu_hours" and r.metric == "eval/synth_vqa/accuracy"
    d = r.data.set_index("encoder")
    assert d.loc["b", "x"] == 2.0 and d.loc["b", "y"] == pytest.approx(0.7)
    assert list(d["on_front"][["a", "b", "c"]]) == [True, True, False]
    assert r.files["png"].exists()
    t.loc[t.encoder == "a", "gpu_hours"] = 0.0                     # one CPU cell: fall back to wall time
    r2 = compute.accuracy_vs_compute(t)
    assert r2.x == "wall_hours" and r2.data.set_index("encoder").loc["c", "x"] == pytest.approx(6.0)


def test_report_is_written_with_marks_tables_and_missing_cells(tmp_path, capsys):
    root = tmp_path / "runs"
    write_arms(root, "tuning", {"full": [0.60, 0.61, 0.62], "lora": [0.40, 0.41, 0.43]})
    write_row(root, {"tuning": "lora", "seed": 5}, {"eval/x/accuracy": 1.0}, schema_version=99)
    assert report.main(["--root", str(root)]) == 0
    md = (root / "report" / "report.md").read_text()
    err = capsys.readouterr().err
    assert "schema_version 99" in err and "schema_version 99" in md
    assert "fig2_lm: lm has only one value (phi2)" in err.replace("not drawn: ", "")
    # the lora arm is 20 points below the baseline on every seed: marked; the baseline is not
    row = next(x for x in md.splitlines() if x.startswith("| synth_vqa/accuracy |") and "full (baseline)" not in x)
    full_cell, lora_cell = row.split("|")[2:4]
    assert "0.610" in full_cell and "\\*" not in full_cell
    assert "0.413" in lora_cell and "\\*" in lora_cell
    for part in ("## Figures", "figures/fig5_lora.png", "## Accuracy versus compute", "### Table 2",
                 "Mipha-3B", "## Missing cells", "Seeds per arm: full: 3, lora: 3", "false-positive rate"):
        assert part in md, part
    assert (root / "report" / "table.parquet").exists() and (root / "report" / "tables" / "table3.tex").exists()


def test_report_baseline_option_and_bad_values(tmp_path, capsys):
    root = tmp_path / "runs"
    write_arms(root, "tuning", {"full": 0.6, "lora": 0.5}, seeds=(0, 1))
    assert report.main(["--root", str(root), "--out", str(tmp_path / "o"), "--baseline", "tuning=lora"]) == 0
    assert "Baseline: **tuning=lora**" in (tmp_path / "o" / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        report.main(["--root", str(root), "--baseline", "colour=red"])
    assert e.value.code == 2


def test_report_on_a_root_with_nothing_readable(tmp_path, capsys):
    assert report.main(["--root", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    assert report.main(["--root", str(tmp_path / "empty")]) == 1
    assert "no result rows could be read" in capsys.readouterr().err
    assert "no result rows could be read" in (tmp_path / "empty" / "report" / "report.md").read_text()


def test_report_with_only_failed_rows_still_writes_and_exits_zero(tmp_path, capsys):
    write_row(tmp_path, {}, status="failed", error="RuntimeError: boom")
    assert report.main(["--root", str(tmp_path)]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "RuntimeError: boom" in md and "not drawn" in md and "no eval/ metric" in md


def test_image_blind_score_is_drawn_as_a_reference_line(tmp_path):
    # the synthetic held-out set reports blind_accuracy beside accuracy: the figure draws it as a dashed line
    for res, acc in ((224, 0.52), (336, 0.56), (448, 0.61)):
        s = binary_scores(400, acc, seed=res)
        write_row(tmp_path, {"resolution": res}, {"eval/synth_qa/accuracy": float(s.mean()),
                                                  "eval/synth_qa/blind_accuracy": 0.382}, {"synth_qa": s})
    r = figures.fig4_resolution(load_table(tmp_path), tmp_path / "out")
    assert r.drawn and r.metrics == ["eval/synth_qa/accuracy"]     # the blind score is a reference, not a bar
    assert r.references == {"eval/synth_qa/accuracy": pytest.approx(0.382)}
    assert "image-blind score" in r.files["svg"].read_text()
    # a figure whose benchmarks report no blind score has no line
    write_arms(tmp_path / "other", "freeze", {"frozen_both": 0.4, "train_both": 0.6}, seeds=(0,))
    other = figures.fig5_freeze(load_table(tmp_path / "other"), tmp_path / "out2")
    assert other.drawn and other.references == {}
    assert "image-blind score" not in other.files["svg"].read_text()
