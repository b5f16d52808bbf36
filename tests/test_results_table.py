"""Tests of ablate.results.table: rows -> tidy table, failed and foreign rows kept apart, files written."""
import json

import pandas as pd
import pytest

from ablate.results import collect, load_failed, load_table, save, wide
from rowfactory import DEFAULT_AXES, write_arms, write_row


def test_one_row_per_cell_and_metric_with_axes_and_compute(tmp_path):
    scores = write_arms(tmp_path, "encoder", {"siglip": [0.5, 0.6], "clip": [0.25, 0.75]}, seeds=(0, 1),
                        n_questions=100, benchmarks=("synth_vqa", "synth_pope"))
    t = load_table(tmp_path)
    # 4 cells x (2 eval metrics + 1 train metric)
    assert len(t) == 12 and t["cell_id"].nunique() == 4
    for a in ("encoder", "resolution", "lm", "tuning", "freeze", "data", "scale", "seed", "sweep"):
        assert a in t.columns
    row = t[(t.encoder == "clip") & (t.seed == 1) & (t.metric == "eval/synth_pope/accuracy")].iloc[0]
    assert row["value"] == pytest.approx(scores[("clip", 1, "synth_pope")].mean()) == pytest.approx(0.75)
    assert row["benchmark"] == "synth_pope" and row["metric_leaf"] == "accuracy"
    assert row["resolution"] == 384 and row["lm"] == "phi2"
    assert (row["wall_s"], row["gpu_hours"], row["train_flops"]) == (45.0, 0.0, 1.0e12)
    assert (row["trainable_params"], row["peak_mem_mb"], row["tokens_seen"]) == (1000, 800.0, 123456)
    # the per-question path is absolute and holds the scores the metric came from
    lines = [json.loads(x) for x in open(row["per_question"])]
    assert sum(x["score"] for x in lines) / len(lines) == pytest.approx(0.75)
    loss = t[(t.metric == "train/stage2/loss") & (t.encoder == "siglip") & (t.seed == 0)].iloc[0]
    assert pd.isna(loss["benchmark"]) and loss["value"] == pytest.approx(0.5)
    assert str(t["resolution"].dtype) == "Int64" and str(t["seed"].dtype) == "Int64"


def test_failed_cells_are_listed_apart(tmp_path):
    write_row(tmp_path, {"lm": "phi15"}, {"eval/x/accuracy": 0.5})
    write_row(tmp_path, {"lm": "qwen15_1_8b"}, status="failed", error="RuntimeError: CUDA out of memory")
    t, f = load_table(tmp_path), load_failed(tmp_path)
    assert set(t["lm"]) == {"phi15"}
    assert len(f) == 1 and f.iloc[0]["lm"] == "qwen15_1_8b"
    assert f.iloc[0]["error"] == "RuntimeError: CUDA out of memory" and f.iloc[0]["status"] == "failed"


def test_unknown_schema_and_broken_json_warn_with_file_names_and_the_rest_goes_on(tmp_path):
    write_row(tmp_path, {"seed": 0}, {"eval/x/accuracy": 0.5})
    bad = write_row(tmp_path, {"seed": 1}, {"eval/x/accuracy": 0.9}, schema_version=2)
    broken = tmp_path / "cells" / "zzz" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    with pytest.warns(UserWarning) as rec:
        c = collect(tmp_path)
    msg = str(rec[0].message)
    assert str(bad) in msg and "schema_version 2" in msg and str(broken) in msg
    assert list(c.table["value"]) == [0.5] and c.n_read == 1
    assert {p for p, _ in c.skipped} == {str(bad), str(broken)}


def test_duplicate_cells_keep_the_newest(tmp_path):
    write_row(tmp_path, {}, {"eval/x/accuracy": 0.1}, cell_id="old", created="2026-01-01T00:00:00Z")
    write_row(tmp_path, {}, {"eval/x/accuracy": 0.2}, cell_id="new", created="2026-02-01T00:00:00Z")
    c = collect(tmp_path)
    assert list(c.table["cell_id"]) == ["new"] and list(c.table["value"]) == [0.2]
    assert any("duplicate" in n and "old" in n for n in c.notes)


def test_extra_axes_become_columns_and_missing_compute_is_nan(tmp_path):
    p = write_row(tmp_path, {"projector": "mlp2x"}, {"eval/x/accuracy": 0.3})
    row = json.loads(p.read_text())
    del row["compute"]["gpu_hours"]
    p.write_text(json.dumps(row))
    t = load_table(tmp_path)
    assert t.iloc[0]["projector"] == "mlp2x"
    assert pd.isna(t.iloc[0]["gpu_hours"]) and t.iloc[0]["wall_s"] == 45.0


def test_save_writes_parquet_and_csv_with_the_same_numbers(tmp_path):
    write_arms(tmp_path / "root", "tuning", {"full": 0.6, "lora": 0.5}, seeds=(0,), n_questions=50)
    write_row(tmp_path / "root", {"tuning": "full", "seed": 9}, status="failed", error="ValueError: x")
    c = collect(tmp_path / "root")
    paths = save(c, tmp_path / "out")
    pq, csv = pd.read_parquet(paths["parquet"]), pd.read_csv(paths["csv"])
    assert len(pq) == len(csv) == len(c.table) == 4
    assert sorted(pq["value"]) == pytest.approx([0.4, 0.5, 0.5, 0.6])
    assert sorted(csv["value"]) == pytest.approx(sorted(pq["value"]))
    assert list(pd.read_csv(paths["failed"])["error"]) == ["ValueError: x"]


def test_wide_has_one_column_per_metric(tmp_path):
    write_arms(tmp_path, "tuning", {"full": 0.6, "lora": 0.5}, seeds=(0, 1), n_questions=50)
    w = wide(load_table(tmp_path))
    assert len(w) == 4
    assert w.set_index(["tuning", "seed"]).loc[("lora", 1), "eval/synth_vqa/accuracy"] == pytest.approx(0.5)


def test_empty_root_gives_an_empty_table_with_the_columns(tmp_path):
    c = collect(tmp_path)
    assert c.table.empty and c.n_read == 0 and "value" in c.table.columns
    assert set(DEFAULT_AXES) <= set(c.table.columns)
