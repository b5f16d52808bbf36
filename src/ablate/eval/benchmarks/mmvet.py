"""MM-Vet: open-ended answers graded in [0, 1] by an LLM judge; total = mean grade x 100.

As the official MM-Vet grader: with several runs the total is the mean of the per-run totals (and `std`
their population standard deviation); a capability score averages the grades of the questions that need
that capability (from MM-Vet's `mm-vet.json`, when given). Grade keys are "v1_<question_id>", as in
LLaVA's convert_mmvet_for_eval. Set a judge first: `MMVet(judge=make_judge(...))`.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import Benchmark, Question, field_of, mean_percent, require_predictions
from ablate.eval.judge import Judge, JudgeUnavailable
from ablate.eval.records import EvalInputError, read_json, read_jsonl, write_json

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


class MMVet(Benchmark):
    name = "mmvet"
    prompt_suffix = ""  # LLaVA-1.5 asks MM-Vet questions as they are
    layout = {"questions": "mm-vet/llava-mm-vet.jsonl", "gt": "mm-vet/mm-vet.json", "images": "mm-vet/images"}

    def __init__(self, judge: Judge | None = None):
        self.judge = judge

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        gold = None
        if "gt" in p:
            gold = read_json(p["gt"])
            if not isinstance(gold, dict):
                raise EvalInputError(p["gt"], "expected an object {\"v1_0\": {question, answer, capability}}")
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            qid = str(field_of(rec, "question_id", p["questions"], lineno))
            key = f"v1_{qid}"
            text = field_of(rec, "text", p["questions"], lineno)
            entry = (gold or {}).get(key)
            if gold is not None and entry is None:
                raise EvalInputError(p["questions"], f"{key!r} is not in {p['gt']}", lineno)
            refs = {"key": key, "question": text, "answer": entry.get("answer") if entry else None,
                    "capability": list(entry.get("capability", [])) if entry else None}
            out.append(Question(qid, str(Path(p["images"]) / field_of(rec, "image", p["questions"], lineno)),
                                self.with_suffix(text), refs, {"key": key}))
        return out

    def answer_key(self, record: dict) -> str:
        # MM-Vet's own results file keys answers "v1_<id>"; LLaVA's answers use the bare id.
        raw = str(record["question_id"])
        return raw[3:] if raw.startswith("v1_") else raw

    def can_score(self, questions) -> bool:
        return self.judge is not None

    def score_one(self, parsed: str, refs: dict) -> float:
        runs = self._grades(parsed, refs)
        return sum(runs) / len(runs)

    def _grades(self, parsed: str, refs: dict) -> list[float]:
        if self.judge is None:
            raise JudgeUnavailable(None, "mmvet: no judge set; pass a grade file (--grades, or "
                                         "make_judge(grades=...)) or a judge endpoint (--judge-url and --judge-model)")
        runs = self.judge.grade(refs["key"], refs["question"], refs["answer"], parsed)
        if not runs or any(not 0.0 <= g <= 1.0 for g in runs):
            raise EvalInputError(None, f"mmvet: grades for {refs['key']!r} must lie in [0, 1], got {runs}")
        return runs

    def score(self, questions, predictions):
        require_predictions(questions, predictions)
        rows, runs_per_q = [], []
        for q in questions:
            # Not score_rows: the per-run grades are needed too, and an endpoint must be asked only once.
            parsed = self.parse(predictions[q.question_id])
            runs = self._grades(parsed, q.refs)
            runs_per_q.append(runs)
            rows.append({"question_id": q.question_id, "prediction": predictions[q.question_id], "parsed": parsed,
                         "score": sum(runs) / len(runs), "runs": runs, **q.meta})
        n_runs = {len(r) for r in runs_per_q}
        if len(n_runs) != 1:
            raise EvalInputError(None, f"mmvet: questions have different numbers of grading runs: {sorted(n_runs)}")
        per_run_totals = [100 * sum(r[i] for r in runs_per_q) / len(runs_per_q) for i in range(n_runs.pop())]
        metrics = {"total": statistics.fmean(per_run_totals)}
        if len(per_run_totals) > 1:
            metrics["std"] = statistics.pstdev(per_run_totals)
        by_cap: dict[str, list[float]] = defaultdict(list)
        for q, r in zip(questions, rows):
            for cap in set(q.refs.get("capability") or []):
                by_cap[cap].append(r["score"])
        metrics.update({cap: mean_percent(v) for cap, v in sorted(by_cap.items())})
        return metrics, rows

    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """The results file the official MM-Vet grader reads: {"v1_<id>": answer}."""
        return write_json(out_path, {q.meta["key"]: predictions[q.question_id] for q in questions
                                     if q.question_id in predictions}, indent=2)
