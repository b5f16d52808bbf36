"""Published LLaVA-v1.5-13B numbers reproduced from LLaVA's own prediction files, via the API and the CLI.

The files live outside the repository (`<repo>/../shared/fixtures`, or `$ABLATE_FIXTURES`) and are read in
place; every test skips with the reason when they are absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.eval.benchmarks import Question, get_benchmark
from ablate.eval.judge import make_judge
from ablate.eval.records import EvalInputError, read_answers

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("ABLATE_FIXTURES", REPO.parent / "shared" / "fixtures")) / "llava-v1.5-13b"

pytestmark = [pytest.mark.fixtures,
              pytest.mark.skipif(not ROOT.is_dir(), reason=f"LLaVA-v1.5-13B fixtures not found at {ROOT} "
                                                           "(set ABLATE_FIXTURES to the shared fixtures folder)")]


def score(name, answers, **paths):
    bench = get_benchmark(name, **({"judge": make_judge(grades=paths.pop("grades"))} if "grades" in paths else {}))
    qs = bench.load(**paths)
    return bench.score(qs, bench.read_answers(answers, qs))


def sqa_answers(tmp_path) -> Path:
    """LLaVA keeps only the scored output for ScienceQA; rebuild an answers file from its `pred` texts."""
    out = json.loads((ROOT / "scienceqa" / "llava-v1.5-13b_output.jsonl").read_text())
    path = tmp_path / "sqa_answers.jsonl"
    path.write_text("".join(json.dumps({"question_id": r["question_id"], "text": r["pred"]}) + "\n"
                            for r in out["correct"] + out["incorrect"]))
    return path


def test_pope_average_f1():
    m, rows = score("pope", ROOT / "pope" / "llava-v1.5-13b.answers.jsonl",
                    questions=ROOT / "pope" / "llava_pope_test.jsonl", gt=ROOT / "pope" / "coco")
    assert round(m["f1"], 1) == 85.9
    assert [sum(r["split"] == s for r in rows) for s in ("random", "popular", "adversarial")] == [2910, 3000, 3000]


def test_mme_perception_and_cognition():
    m, _ = score("mme", ROOT / "mme" / "llava-v1.5-13b.answers.jsonl",
                 questions=ROOT / "mme" / "llava_mme.jsonl", gt=ROOT / "mme" / "ground_truth")
    assert round(m["perception"], 1) == 1531.3 and round(m["cognition"], 2) == 295.36


@pytest.mark.parametrize("answers", ["llava-v1.5-13b.upload.xlsx", "llava-v1.5-13b.answers.jsonl"])
def test_mmbench_dev_circular_eval(answers):
    m, _ = score("mmbench", ROOT / "mmbench" / answers, questions=ROOT / "mmbench" / "llava-v1.5-13b.upload.xlsx")
    assert round(m["accuracy"], 1) == 67.7


def test_scienceqa_img_accuracy_and_per_question_agreement(tmp_path):
    bench = get_benchmark("scienceqa")
    qs = bench.load(questions=ROOT / "scienceqa" / "llava_test_CQM-A.json")
    m, rows = bench.score(qs, bench.read_answers(sqa_answers(tmp_path), qs))
    official = json.loads((ROOT / "scienceqa" / "llava-v1.5-13b_result.json").read_text())
    assert round(m["img_accuracy"], 1) == 71.6 and m["accuracy"] == pytest.approx(official["acc"])
    # LLaVA's script stores each parsed option index, -1 when parsing failed or the letter is beyond the
    # question's options (33 answers say "C" to a two-option question): ours must agree on all 4,241.
    valid = {q.question_id: "ABCDE"[: q.refs["n_choices"]] for q in qs}
    ours = {r["question_id"]: valid[r["question_id"]].find(r["parsed"]) if len(r["parsed"]) == 1 else -1
            for r in rows}
    assert ours == official["results"]


def test_mmvet_total_from_grade_files():
    mmvet = ROOT / "mm-vet"
    m, _ = score("mmvet", mmvet / "llava-v1.5-13b.jsonl", questions=mmvet / "llava-mm-vet.jsonl",
                 grades=mmvet / "llava-v1.5-13b_gpt-4-grade-1runs.json")
    assert round(m["total"], 1) == 36.1
    m3, _ = score("mmvet", mmvet / "llava-v1.5-13b.json", questions=mmvet / "llava-mm-vet.jsonl",
                  grades=mmvet / "llava-v1.5-13b_gpt-4-grade-3runs.json")
    assert (round(m3["total"], 1), round(m3["std"], 1)) == (36.3, 0.2)   # the 3-run CSV row


def test_vizwiz_normalisation_reproduces_llava_upload_for_all_answers(tmp_path):
    bench = get_benchmark("vizwiz")
    qs = bench.load(questions=ROOT / "vizwiz" / "llava_test.jsonl")
    out = bench.write_submission(qs, bench.read_answers(ROOT / "vizwiz" / "llava-v1.5-13b.answers.jsonl", qs),
                                 tmp_path / "upload.json")
    ours, theirs = json.loads(out.read_text()), json.loads((ROOT / "vizwiz" / "llava-v1.5-13b.upload.json").read_text())
    assert len(theirs) == 8000 and ours == theirs


@pytest.mark.parametrize("name, questions, answers", [
    ("gqa", "gqa/llava_gqa_testdev_balanced.jsonl", "gqa/llava-v1.5-13b.answers.jsonl"),
    ("textvqa", "textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/llava-v1.5-13b.answers.jsonl"),
])
def test_llava_question_and_answer_files_without_public_ground_truth_load_and_match(name, questions, answers):
    bench = get_benchmark(name)
    qs = bench.load(questions=ROOT / questions)
    preds = bench.read_answers(ROOT / answers, qs)   # raises unless ids match one to one
    assert len(preds) == len(qs) and not bench.can_score(qs)


def test_duplicate_ids_in_a_real_upload_are_reported_with_both_lines():
    # SEED-Bench repeats question id 49914, so LLaVA's upload has two lines for it.
    with pytest.raises(EvalInputError, match=r"upload.jsonl:10135: duplicate answer for question '49914' "
                                             r"\(first at line 7651\)"):
        read_answers(ROOT / "seed_bench" / "llava-v1.5-13b.upload.jsonl")


def test_seed_reads_repeated_ids_in_order():
    # SEED's own reader pairs the k-th answer for an id with the k-th question carrying it.
    upload = ROOT / "seed_bench" / "llava-v1.5-13b.upload.jsonl"
    ids = [json.loads(line)["question_id"] for line in upload.read_text().splitlines()]
    bench = get_benchmark("seed")
    qs = [Question(q, None, "") for q in bench.disambiguate(ids)]
    preds = bench.read_answers(upload, qs)
    assert len(preds) == 19242 and preds["49914"] == "B" and "49914#2" in preds


def run_cli(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "ablate.evaluate", *map(str, args), "--json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_reproduces_the_published_numbers(tmp_path):
    pope = run_cli("pope", "--questions", ROOT / "pope/llava_pope_test.jsonl", "--gt", ROOT / "pope/coco",
                   "--answers", ROOT / "pope/llava-v1.5-13b.answers.jsonl", "--out", tmp_path / "pope.jsonl")
    assert round(pope["metrics"]["f1"], 1) == 85.9
    assert len((tmp_path / "pope.jsonl").read_text().splitlines()) == 8910
    mme = run_cli("mme", "--questions", ROOT / "mme/llava_mme.jsonl", "--gt", ROOT / "mme/ground_truth",
                  "--answers", ROOT / "mme/llava-v1.5-13b.answers.jsonl")
    assert round(mme["metrics"]["perception"], 1) == 1531.3 and round(mme["metrics"]["cognition"], 2) == 295.36
    mmb = run_cli("mmbench", "--questions", ROOT / "mmbench/llava-v1.5-13b.upload.xlsx",
                  "--answers", ROOT / "mmbench/llava-v1.5-13b.upload.xlsx")
    assert round(mmb["metrics"]["accuracy"], 1) == 67.7
    sqa = run_cli("scienceqa", "--questions", ROOT / "scienceqa/llava_test_CQM-A.json",
                  "--answers", sqa_answers(tmp_path))
    assert round(sqa["metrics"]["img_accuracy"], 1) == 71.6
    mmvet = run_cli("mmvet", "--questions", ROOT / "mm-vet/llava-mm-vet.jsonl", "--answers",
                    ROOT / "mm-vet/llava-v1.5-13b.jsonl",
                    "--grades", ROOT / "mm-vet/llava-v1.5-13b_gpt-4-grade-1runs.json")
    assert round(mmvet["metrics"]["total"], 1) == 36.1
    viz = run_cli("vizwiz", "--questions", ROOT / "vizwiz/llava_test.jsonl", "--answers",
                  ROOT / "vizwiz/llava-v1.5-13b.answers.jsonl", "--submission", tmp_path / "vizwiz.json")
    assert viz["metrics"] is None
    assert json.loads((tmp_path / "vizwiz.json").read_text()) == json.loads(
        (ROOT / "vizwiz/llava-v1.5-13b.upload.json").read_text())
