"""The benchmark interface: Question records, and the load -> parse -> score_one -> score contract.

A benchmark class knows one official evaluation: where LLaVA-1.5 keeps its files
(`playground/data/eval/<bench>/...`), the exact prompt suffix LLaVA-1.5 appends, how the official script
reads a raw model output (`parse`), and how it scores one parsed answer against its references
(`score_one`). `score` aggregates exactly as the official script does. Metric values are in the units
the papers print (accuracy in percent, MME as a sum of percents); per-question scores are in [0, 1].
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.eval.records import Answer, EvalInputError, check_coverage, read_answers

LLAVA_SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LLAVA_OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."


@dataclass
class Question:
    """One benchmark question as fed to the model.

    `image` is a path (str) or, for MMBench's base64 TSV, a lazily decoded PIL image; `prompt` is the user
    text including the benchmark's prompt suffix but without the image placeholder token; `refs` is what
    `score_one` compares against; `meta` carries what aggregation needs (split, subtask, category ...).
    """

    question_id: str
    image: Any
    prompt: str
    refs: Any = None
    meta: dict = field(default_factory=dict)


class Benchmark:
    """Base class: subclasses set `name`, `prompt_suffix`, `layout` and implement the four steps."""

    name: str = ""
    prompt_suffix: str = ""
    # Default file locations relative to an eval root (LLaVA's playground/data/eval). Keys: questions, gt,
    # images. A benchmark may leave `gt` out when its ground truth is a server.
    layout: dict[str, str] = {}
    # Whether answers for question ids the loader does not know are tolerated (SEED uploads carry video
    # questions alongside image ones, for instance).
    allow_extra_answers: bool = False

    # ---- loading -------------------------------------------------------------------------------
    def paths(self, root: str | os.PathLike | None = None, **given: str | os.PathLike | None) -> dict[str, Path]:
        """Resolve file locations: explicit paths win, the rest come from `layout` under `root`."""
        out: dict[str, Path] = {}
        for key in ("questions", "gt", "images"):
            value = given.get(key)
            if value is not None:
                out[key] = Path(value)
            elif root is not None and key in self.layout:
                # A default ground-truth file that is absent just means "no local ground truth" (test
                # splits); an explicitly given one that is absent is an error, raised by its reader.
                candidate = Path(root) / self.layout[key]
                if key != "gt" or candidate.exists():
                    out[key] = candidate
        if "questions" not in out:
            raise EvalInputError(None, f"{self.name}: no question file given (pass questions= or root=)")
        if "images" not in out:
            out["images"] = out["questions"].parent
        return out

    def load(self, root: str | os.PathLike | None = None, *, questions: str | os.PathLike | None = None,
             gt: str | os.PathLike | None = None, images: str | os.PathLike | None = None) -> list[Question]:
        """Read the benchmark's questions (and references, when the ground truth is local)."""
        raise NotImplementedError

    def with_suffix(self, text: str) -> str:
        """The prompt LLaVA feeds: the question text, plus the suffix unless the file already has it."""
        text = text.replace("<image>", "").strip()
        if self.prompt_suffix and not text.endswith(self.prompt_suffix):
            text = text + self.prompt_suffix
        return text

    # ---- answers -------------------------------------------------------------------------------
    def answer_key(self, record: dict) -> str:
        """The question id an answer record belongs to (override where ids are not unique)."""
        return str(record["question_id"])

    def read_answers(self, path: str | os.PathLike, questions: list[Question]) -> dict[str, str]:
        """Answers file -> {question_id: raw text}, checked against the questions."""
        answers: dict[str, Answer] = read_answers(path, key=self.answer_key)
        check_coverage(answers, [q.question_id for q in questions], path, allow_extra=self.allow_extra_answers)
        return {k: a.text for k, a in answers.items()}

    # ---- scoring -------------------------------------------------------------------------------
    def parse(self, raw_output: str) -> Any:
        """Raw model output -> the answer the official script compares."""
        return raw_output

    def parse_for(self, question: Question, raw_output: str) -> Any:
        """`parse` with the question at hand (multiple-choice parsers need its options)."""
        return self.parse(raw_output)

    def score_one(self, parsed: Any, refs: Any) -> float:
        """Score of one parsed answer in [0, 1]: exact match unless a benchmark says otherwise."""
        return float(parsed == refs)

    def can_score(self, questions: list[Question]) -> bool:
        """Whether local ground truth exists (False for test splits scored by a server)."""
        return all(q.refs is not None for q in questions)

    def score(self, questions: list[Question], predictions: dict[str, str]) -> tuple[dict[str, float], list[dict]]:
        """Default aggregation: mean of per-question scores, in percent, as `accuracy`."""
        rows = self.checked_rows(questions, predictions)
        return {"accuracy": mean_percent(r["score"] for r in rows)}, rows

    def checked_rows(self, questions: list[Question], predictions: dict[str, str]) -> list[dict]:
        """`score_rows` after checking that every question has local ground truth (not a server split)."""
        for q in questions:
            need_refs(q, self.name)
        return self.score_rows(questions, predictions)

    def score_rows(self, questions: list[Question], predictions: dict[str, str]) -> list[dict]:
        """Per-question rows: id, raw prediction, parsed answer, score, and the question's meta."""
        require_predictions(questions, predictions)
        rows = []
        for q in questions:
            raw = predictions[q.question_id]
            parsed = self.parse_for(q, raw)
            rows.append({"question_id": q.question_id, "prediction": raw, "parsed": parsed,
                         "score": float(self.score_one(parsed, q.refs)), **q.meta})
        return rows


def require_predictions(questions: list[Question], predictions: dict[str, str]) -> None:
    """Fail (once, clearly) when predictions miss questions; scoring never guesses a missing answer."""
    missing = [q.question_id for q in questions if q.question_id not in predictions]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise EvalInputError(None, f"no prediction for {len(missing)} of {len(questions)} questions (first: {shown})")


def mean_percent(values) -> float:
    values = list(values)
    if not values:
        raise EvalInputError(None, "nothing to score: the benchmark has no questions")
    return 100.0 * sum(values) / len(values)


def need_refs(q: Question, bench: str) -> None:
    if q.refs is None:
        raise EvalInputError(None, f"{bench}: question {q.question_id!r} has no ground truth; pass gt= (--gt), "
                                   "or, for a test split scored by a server, write_submission (--submission)")


def field_of(rec: dict, key: str, path, lineno):
    """A required field of a question record, or an error naming the file and line."""
    if key not in rec or rec[key] is None:
        raise EvalInputError(path, f"record has no '{key}'", lineno)
    return rec[key]


def int_if_digits(qid: str):
    """Official upload files carry integer ids where the source had them."""
    return int(qid) if qid.isdigit() else qid
