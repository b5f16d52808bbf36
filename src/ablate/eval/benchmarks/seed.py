"""SEED-Bench: multiple choice, scored as LLaVA's convert_seed_for_submission (exact letter match).

LLaVA compares the model's (stripped) output with the gold letter as strings: "B" is right, "B." is not.
ablate keeps that rule rather than a looser letter extraction so its numbers stay comparable with
LLaVA-1.5's. Ground truth: SEED-Bench.json ({"questions": [{question_id, answer, data_type,
question_type_id}], "question_type": {name: id}}). `accuracy` is over image questions (the paper's
SEED-img); `video_accuracy` and per-type accuracies are reported when present.

SEED-Bench repeats a few question ids (LLaVA's upload has two lines for "49914"). Files are paired in
order: the k-th record carrying an id (k >= 2) becomes "<id>#<k>" in questions, ground truth and answers
alike, and the submission writes the original id back.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_OPTION_LETTER, Benchmark, Question, field_of, mean_percent
from ablate.eval.records import Answer, EvalInputError, check_coverage, read_answers, read_json, read_jsonl, write_jsonl

DUP_SEP = "#"


def seed_parse(raw_output: str) -> str:
    """The answer LLaVA compares: the output with surrounding whitespace removed.

    >>> seed_parse(" C ")
    'C'
    """
    return raw_output.strip()


class SEED(Benchmark):
    name = "seed"
    prompt_suffix = LLAVA_OPTION_LETTER
    layout = {"questions": "seed_bench/llava-seed-bench.jsonl", "gt": "seed_bench/SEED-Bench.json",
              "images": "seed_bench"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        gold, type_names = None, {}
        if "gt" in p:
            doc = read_json(p["gt"])
            if not isinstance(doc, dict) or not isinstance(doc.get("questions"), list):
                raise EvalInputError(p["gt"], "expected an object with a 'questions' list (SEED-Bench.json)")
            type_names = {v: k for k, v in doc.get("question_type", {}).items()}
            for i, g in enumerate(doc["questions"]):
                if "question_id" not in g or "answer" not in g:
                    raise EvalInputError(p["gt"], f"question #{i} lacks question_id or answer")
            gold = dict(zip(self.disambiguate([str(g["question_id"]) for g in doc["questions"]]), doc["questions"]))
        records = read_jsonl(p["questions"])
        ids = self.disambiguate([str(field_of(r, "question_id", p["questions"], ln)) for ln, r in records])
        out = []
        for qid, (lineno, rec) in zip(ids, records):
            refs, meta = None, {}
            if gold is not None:
                g = gold.get(qid)
                if g is None:
                    raise EvalInputError(p["questions"], f"question {qid!r} is not in {p['gt']}", lineno)
                refs = str(g["answer"])
                qtype = g.get("question_type_id")
                meta = {"data_type": g.get("data_type", "image"), "question_type": type_names.get(qtype, qtype)}
            out.append(Question(qid, str(Path(p["images"]) / field_of(rec, "image", p["questions"], lineno)),
                                self.with_suffix(field_of(rec, "text", p["questions"], lineno)), refs, meta))
        return out

    @staticmethod
    def disambiguate(ids: list[str]) -> list[str]:
        """The k-th occurrence (k >= 2) of an id becomes "<id>#<k>"; first occurrences stay as they are."""
        seen: dict[str, int] = defaultdict(int)
        out = []
        for qid in ids:
            seen[qid] += 1
            out.append(qid if seen[qid] == 1 else f"{qid}{DUP_SEP}{seen[qid]}")
        return out

    def read_answers(self, path, questions) -> dict[str, str]:
        seen: dict[str, int] = defaultdict(int)

        def key(record: dict) -> str:  # answers are paired with questions in file order, as in load
            qid = str(record["question_id"])
            seen[qid] += 1
            return qid if seen[qid] == 1 else f"{qid}{DUP_SEP}{seen[qid]}"

        answers: dict[str, Answer] = read_answers(path, key=key)
        check_coverage(answers, [q.question_id for q in questions], path, allow_extra=self.allow_extra_answers)
        return {k: a.text for k, a in answers.items()}

    def parse(self, raw_output: str) -> str:
        return seed_parse(raw_output)

    def score(self, questions, predictions):
        rows = self.checked_rows(questions, predictions)
        image = [r for r in rows if r.get("data_type", "image") == "image"]
        video = [r for r in rows if r.get("data_type") == "video"]
        metrics = {}
        if image:
            metrics["accuracy"] = mean_percent(r["score"] for r in image)
        if video:
            metrics["video_accuracy"] = mean_percent(r["score"] for r in video)
        metrics["all_accuracy"] = mean_percent(r["score"] for r in rows)
        by_type: dict[str, list[float]] = defaultdict(list)
        for r in image:
            if r.get("question_type") is not None:
                by_type[_slug(r["question_type"])].append(r["score"])
        metrics.update({f"type/{t}": mean_percent(v) for t, v in sorted(by_type.items())})
        return metrics, rows

    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """LLaVA's upload file: one {question_id, prediction} line per question with an answer."""
        return write_jsonl(out_path, ({"question_id": q.question_id.split(DUP_SEP)[0],
                                       "prediction": predictions[q.question_id]}
                                      for q in questions if q.question_id in predictions))


def _slug(name) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")
