"""ScienceQA (test split, LLaVA's CQM-A format): option-letter extraction as LLaVA's eval_science_qa.

The letter is taken only when the whole output is a letter, when it starts with "X. ", or from
"The answer is X" (with or without the period); anything else fails, and a letter beyond the question's
choices is wrong. `accuracy` covers every test question (the script's "Accuracy"), `img_accuracy` the
questions with an image (its "IMG-Accuracy", the paper's SQA-I).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_OPTION_LETTER, Benchmark, Question, field_of, mean_percent
from ablate.eval.records import EvalInputError, read_json

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
_ANSWER_IS_DOT = re.compile(r"The answer is ([A-E])\.")
_ANSWER_IS = re.compile(r"The answer is ([A-E])")
_OPTION_LINE = re.compile(r"^([A-E])\. ")


def sqa_parse(raw_output: str, options: Sequence[str] = OPTIONS) -> str:
    """LLaVA's eval_science_qa letter extraction; returns the letter or "FAILED".

    >>> sqa_parse("C. a magnet")
    'C'
    >>> sqa_parse("The answer is B.")
    'B'
    >>> sqa_parse("B or C")
    'FAILED'
    """
    text = raw_output.replace("\n", ". ")
    if text.strip() in options:
        return text.strip()
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    if "The answer is " in text:
        match = _ANSWER_IS_DOT.search(text) or _ANSWER_IS.search(text)
        if match:
            return match.group(1)
    return FAILED


def count_choices(question_text: str) -> int:
    """Number of options in a CQM-A question: "A. ...", "B. ..." lines after the last "A. " line.

    An option may run over several lines ("A. See you soon,\nJanet"), so lines that do not start the
    next letter are continuation lines, not the end of the block.
    """
    lines = question_text.rstrip().split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("A. ")]
    if not starts:
        return 0
    n = 1
    for line in lines[starts[-1] + 1:]:
        if n < len(OPTIONS) and line.startswith(OPTIONS[n] + ". "):
            n += 1
    return n


class ScienceQA(Benchmark):
    name = "scienceqa"
    prompt_suffix = LLAVA_OPTION_LETTER
    layout = {"questions": "scienceqa/llava_test_CQM-A.json", "images": "scienceqa/images/test"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        doc = read_json(p["questions"])
        if not isinstance(doc, list):
            raise EvalInputError(p["questions"], "expected a JSON list of LLaVA conversation records")
        out = []
        for i, rec in enumerate(doc):
            where = f"record #{i}"
            convs = rec.get("conversations") if isinstance(rec, dict) else None
            if not isinstance(convs, list) or not convs or "value" not in convs[0]:
                raise EvalInputError(p["questions"], f"{where} has no conversations[0].value")
            text = convs[0]["value"]
            n = count_choices(text)
            if n < 2:
                raise EvalInputError(p["questions"], f"{where} ({rec.get('id')!r}): no 'A. ...' option lines")
            answer = convs[1]["value"].strip() if len(convs) > 1 else None
            if answer is not None and answer not in OPTIONS[:n]:
                raise EvalInputError(p["questions"], f"{where} ({rec.get('id')!r}): answer {answer!r} is not "
                                                     f"one of the {n} options")
            image = rec.get("image")
            out.append(Question(str(field_of(rec, "id", p["questions"], None)),
                                str(Path(p["images"]) / image) if image else None, self.with_suffix(text),
                                None if answer is None else {"answer": answer, "n_choices": n},
                                {"is_multimodal": image is not None}))
        return out

    def parse(self, raw_output: str) -> str:
        return sqa_parse(raw_output)

    def score_one(self, parsed: str, refs: dict) -> float:
        # A letter beyond the question's options counts as a failed parse (get_pred_idx returns -1).
        valid = OPTIONS[: refs["n_choices"]]
        return float(parsed in valid and parsed == refs["answer"])

    def score(self, questions, predictions):
        if any(q.refs is None for q in questions):
            raise EvalInputError(None, "scienceqa: the question file has no answers (conversations[1])")
        rows = self.score_rows(questions, predictions)
        img = [r["score"] for r in rows if r["is_multimodal"]]
        metrics = {"accuracy": mean_percent(r["score"] for r in rows)}
        if img:
            metrics["img_accuracy"] = mean_percent(img)
        return metrics, rows
