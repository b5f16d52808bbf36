"""VQAv2: short-answer VQA scored by the official VQA accuracy (ten leave-one-out subsets of min(1, n/3)).

LLaVA-1.5 runs test-dev, whose ground truth lives on the EvalAI server: `write_submission` writes the file
LLaVA uploads (EvalAI-normalised answers, "" for a missing one). With local annotations in the official
format (`v2_mscoco_val2014_annotations.json`, or the synthetic suite's), `score` reproduces the server.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import (LLAVA_SHORT_ANSWER, Benchmark, Question, field_of, int_if_digits,
                                         mean_percent)
from ablate.eval.normalize import normalize_answer, official_vqa_prediction, process_punctuation
from ablate.eval.records import EvalInputError, read_json, read_jsonl, write_json


def vqa_accuracy(prediction: str, references: list[str], process_refs: bool = True) -> float:
    """Official VQA accuracy of one answer.

    The prediction goes through the official punctuation and digit/article steps. The references are
    compared as stored, except that the VQA script runs the punctuation step on them when the ten
    references disagree (`process_refs=True`); the VizWiz script never touches them (`process_refs=False`).
    The score averages, over the ten subsets that leave one reference out, min(1, matches / 3).

    >>> vqa_accuracy("Two", ["2"] * 10)
    1.0
    >>> round(vqa_accuracy("cat", ["cat", "cat"] + ["dog"] * 8), 4)
    0.6
    """
    if not references:
        raise EvalInputError(None, "a VQA question has no reference answers")
    pred = official_vqa_prediction(prediction)
    refs = list(references)
    if process_refs and len(set(refs)) > 1:
        refs = [process_punctuation(r) for r in refs]
    return leave_one_out(pred, refs)


def leave_one_out(pred: str, refs: list[str]) -> float:
    """Mean, over the subsets that leave one reference out, of min(1, matches among the rest / 3)."""
    total = 0.0
    for left_out in range(len(refs)):
        matches = sum(1 for j, r in enumerate(refs) if j != left_out and r == pred)
        total += min(1.0, matches / 3.0)
    return total / len(refs)


def read_vqa_annotations(path: str | os.PathLike) -> dict[str, dict]:
    """Official VQA annotation file -> {question_id: annotation}, checked for the fields scoring needs."""
    doc = read_json(path)
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(anns, list):
        raise EvalInputError(path, "expected an object with an 'annotations' list (official VQA format)")
    out = {}
    for i, a in enumerate(anns):
        if not isinstance(a, dict) or "question_id" not in a or not isinstance(a.get("answers"), list):
            raise EvalInputError(path, f"annotation #{i} lacks question_id or an answers list")
        out[str(a["question_id"])] = a
    return out


class VQAv2(Benchmark):
    name = "vqav2"
    prompt_suffix = LLAVA_SHORT_ANSWER
    layout = {"questions": "vqav2/llava_vqav2_mscoco_test-dev2015.jsonl", "images": "vqav2/test2015"}
    process_refs = True

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        anns = read_vqa_annotations(p["gt"]) if "gt" in p else None
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            qid = field_of(rec, "question_id", p["questions"], lineno)
            refs, meta = None, {}
            if anns is not None:
                a = anns.get(str(qid))
                if a is None:
                    raise EvalInputError(p["questions"], f"question {qid!r} has no annotation in {p['gt']}", lineno)
                refs = [ans["answer"] for ans in a["answers"]]
                meta = {"answer_type": a.get("answer_type", "other")}
            out.append(Question(str(qid), str(Path(p["images"]) / field_of(rec, "image", p["questions"], lineno)),
                                self.with_suffix(field_of(rec, "text", p["questions"], lineno)), refs, meta))
        return out

    def parse(self, raw_output: str) -> str:
        # LLaVA normalises with the EvalAI processor before uploading; the server then applies its own steps.
        return normalize_answer(raw_output)

    def score_one(self, parsed: str, refs: list[str]) -> float:
        return vqa_accuracy(parsed, refs, process_refs=self.process_refs)

    def score(self, questions, predictions):
        rows = self.checked_rows(questions, predictions)
        metrics = {"accuracy": mean_percent(r["score"] for r in rows)}
        by_type = defaultdict(list)
        for r in rows:
            by_type[r.get("answer_type", "other")].append(r["score"])
        for t, scores in sorted(by_type.items()):
            metrics[f"answer_type/{t.replace('/', '_')}"] = mean_percent(scores)
        return metrics, rows

    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """The EvalAI upload: [{question_id, answer}] in question order; a missing answer uploads as ""."""
        rows = [{"question_id": int_if_digits(q.question_id),
                 "answer": normalize_answer(predictions[q.question_id]) if q.question_id in predictions else ""}
                for q in questions]
        return write_json(out_path, rows)


__all__ = ["VQAv2", "vqa_accuracy", "leave_one_out", "read_vqa_annotations"]
