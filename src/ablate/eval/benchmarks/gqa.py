"""GQA (testdev-balanced): exact-match accuracy after LLaVA's conversion of raw outputs.

LLaVA's convert_gqa_for_eval keeps `text.rstrip('.').lower()` as the prediction; GQA's official eval.py
then counts a question correct when the prediction equals the gold answer string. The ground truth is
GQA's `testdev_balanced_questions.json` ({question id: {"answer": ...}}).
"""
from __future__ import annotations

from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_SHORT_ANSWER, Benchmark, Question, field_of
from ablate.eval.records import EvalInputError, read_json, read_jsonl, write_json


def gqa_parse(raw_output: str) -> str:
    """LLaVA's GQA conversion: drop trailing periods, lower-case. Nothing else (no whitespace strip).

    >>> gqa_parse("Yes.")
    'yes'
    """
    return raw_output.rstrip(".").lower()


class GQA(Benchmark):
    name = "gqa"
    prompt_suffix = LLAVA_SHORT_ANSWER
    layout = {"questions": "gqa/llava_gqa_testdev_balanced.jsonl", "gt": "gqa/data/testdev_balanced_questions.json",
              "images": "gqa/data/images"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        gold = None
        if "gt" in p:
            gold = read_json(p["gt"])
            if not isinstance(gold, dict):
                raise EvalInputError(p["gt"], "expected an object {question id: question} (official GQA format)")
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            qid = str(field_of(rec, "question_id", p["questions"], lineno))
            refs = None
            if gold is not None:
                entry = gold.get(qid)
                if not isinstance(entry, dict) or "answer" not in entry:
                    raise EvalInputError(p["questions"], f"question {qid!r} has no answer in {p['gt']}", lineno)
                refs = entry["answer"]
            out.append(Question(qid, str(Path(p["images"]) / field_of(rec, "image", p["questions"], lineno)),
                                self.with_suffix(field_of(rec, "text", p["questions"], lineno)), refs, {}))
        return out

    def parse(self, raw_output: str) -> str:
        return gqa_parse(raw_output)


    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """The predictions file GQA's eval.py reads: [{questionId, prediction}]."""
        rows = [{"questionId": q.question_id, "prediction": gqa_parse(predictions[q.question_id])}
                for q in questions if q.question_id in predictions]
        return write_json(out_path, rows)
