"""MMBench (en and cn): multiple choice from the official TSV, choice extraction, CircularEval.

The TSV holds every rotated copy of a question as its own row; copies share `index % 1_000_000`.
CircularEval counts a question only if every copy is answered right (`accuracy`, the paper's number);
`vanilla_accuracy` scores only the original rows (index < 1_000_000).

Choice extraction follows the MMBench/VLMEvalKit rules: a single option letter standing alone in the
output (after turning ".()[],:;!*#{}" into spaces) wins; an output naming no letter but a lone "Z", or one
of the known refusal phrases, is "Z" (no answer); otherwise the option whose text appears (lower-cased) in
the output, if exactly one does. The official evaluator then asks ChatGPT; ablate has no such fallback
and counts an unmatched output wrong (`parsed` is null in the per-question rows).
"""
from __future__ import annotations

import base64
import io
from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_OPTION_LETTER, Benchmark, Question, mean_percent, need_refs
from ablate.eval.records import EvalInputError, read_table, write_bytes

LETTERS = ("A", "B", "C", "D")
CIRCULAR_MOD = 1_000_000
_SPACED = ".()[],:;!*#{}"
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")


def _is_none(value) -> bool:
    # LLaVA's model_vqa_mmbench: NaN, and the strings "nan"/"none" in any case, mean "no option here".
    return value is None or (isinstance(value, float) and value != value) or (
        isinstance(value, str) and value.strip().lower() in ("nan", "none"))


def mmbench_parse(raw_output: str, choices: dict[str, str]) -> str | None:
    """Option letter, "Z" for no answer, or None when the rules cannot decide.

    >>> mmbench_parse("The answer is (B).", {"A": "cat", "B": "dog"})
    'B'
    >>> mmbench_parse("It is a dog", {"A": "cat", "B": "dog"})
    'B'
    >>> mmbench_parse("A or B", {"A": "cat", "B": "dog"}) is None
    True
    """
    for phrase in _REFUSALS:
        if phrase in raw_output:
            return "Z"
    spaced = raw_output
    for ch in _SPACED:
        spaced = spaced.replace(ch, " ")
    words = spaced.split()
    named = [c for c in choices if c in words]
    if len(named) == 1:
        return named[0]
    if not named and "Z" in words:
        return "Z"
    lowered = raw_output.lower()
    by_text = [c for c, text in choices.items() if str(text).lower() in lowered]
    return by_text[0] if len(by_text) == 1 else None


def circular_groups(indices: list[int]) -> dict[int, list[int]]:
    """Positions of rows grouped by `index % 1_000_000` (the rotated copies of one question)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for pos, index in enumerate(indices):
        groups[index % CIRCULAR_MOD].append(pos)
    return groups


class MMBench(Benchmark):
    name = "mmbench"
    prompt_suffix = LLAVA_OPTION_LETTER
    layout = {"questions": "mmbench/mmbench_dev_20230712.tsv"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        out, decoded = [], {}
        for lineno, row in read_table(p["questions"]):
            for col in ("index", "question"):
                if _is_none(row.get(col)):
                    raise EvalInputError(p["questions"], f"row has no '{col}'", lineno)
            try:
                index = int(row["index"])
            except (TypeError, ValueError):
                raise EvalInputError(p["questions"], f"index {row['index']!r} is not an integer", lineno) from None
            choices = {}
            for letter in LETTERS:  # options stop at the first empty one, as in LLaVA
                if letter not in row or _is_none(row[letter]):
                    break
                choices[letter] = str(row[letter])
            if len(choices) < 2:
                raise EvalInputError(p["questions"], "fewer than two options (columns A, B, ...)", lineno)
            answer = None if _is_none(row.get("answer")) else str(row["answer"]).strip()
            if answer is not None and answer not in choices:
                raise EvalInputError(p["questions"], f"answer {answer!r} is not one of the options {list(choices)}",
                                     lineno)
            text = str(row["question"])
            if not _is_none(row.get("hint")):
                text = f"{row['hint']}\n{text}"
            for letter, option in choices.items():
                text += f"\n{letter}. {option}"
            meta = {"index": index, "category": None if _is_none(row.get("category")) else str(row["category"]),
                    "split": None if _is_none(row.get("split")) else str(row["split"])}
            out.append(Question(str(index), self._image(row.get("image"), p["questions"], lineno, decoded),
                                self.with_suffix(text), {"answer": answer, "choices": choices,
                                                         "question": str(row["question"])}, meta))
        return out

    @staticmethod
    def _image(value, path, lineno, decoded: dict):
        """The row's image; rows with the same image cell (CircularEval's rotated copies) get the same object,
        so batched generation treats them as one image (ablate.eval.generate: one prefix per distinct image)."""
        if _is_none(value):
            return None
        from PIL import Image  # only needed when the table carries images

        key = str(value)
        if key in decoded:
            return decoded[key]
        try:
            # Image.open is lazy: pixels are decoded when the model's processor first touches them.
            decoded[key] = Image.open(io.BytesIO(base64.b64decode(key)))
            return decoded[key]
        except Exception as e:  # a corrupt cell: say where
            raise EvalInputError(path, f"image cell is not a base64 image ({type(e).__name__})", lineno) from None

    def parse(self, raw_output: str) -> str | None:
        return mmbench_parse(raw_output, {c: "" for c in LETTERS})

    def parse_for(self, question: Question, raw_output: str) -> str | None:
        return mmbench_parse(raw_output, question.refs["choices"])

    def score_one(self, parsed: str | None, refs: dict) -> float:
        return float(parsed is not None and parsed == refs["answer"])

    def can_score(self, questions) -> bool:
        return all(q.refs.get("answer") is not None for q in questions)

    def score(self, questions, predictions):
        for q in questions:
            if q.refs.get("answer") is None:
                need_refs(Question(q.question_id, None, ""), self.name)
        rows = self.score_rows(questions, predictions)
        groups = circular_groups([r["index"] for r in rows])
        passed = {g: all(rows[i]["score"] == 1.0 for i in pos) for g, pos in groups.items()}
        for g, pos in groups.items():
            for i in pos:
                rows[i]["circular_pass"] = passed[g]
        metrics = {"accuracy": mean_percent(float(v) for v in passed.values())}
        originals = [r["score"] for r in rows if r["index"] < CIRCULAR_MOD]
        if originals:
            metrics["vanilla_accuracy"] = mean_percent(originals)
        by_cat: dict[str, list[float]] = defaultdict(list)
        for g, pos in groups.items():
            cat = rows[pos[0]].get("category")
            if cat:
                by_cat[cat].append(float(passed[g]))
        metrics.update({f"category/{c}": mean_percent(v) for c, v in sorted(by_cat.items())})
        return metrics, rows

    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """The upload table LLaVA writes: index, question, A-D, prediction, answer, split (xlsx)."""
        import pandas as pd

        records = []
        for q in questions:
            rec = {"index": q.meta["index"], "question": q.refs["question"]}
            rec.update({c: q.refs["choices"].get(c) for c in LETTERS})
            rec["prediction"] = predictions.get(q.question_id)
            if q.refs.get("answer") is not None:
                rec["answer"] = q.refs["answer"]
            if q.meta.get("split") is not None:
                rec["split"] = q.meta["split"]
            records.append(rec)
        buf = io.BytesIO()
        pd.DataFrame(records).to_excel(buf, index=False, engine="openpyxl")
        return write_bytes(out_path, buf.getvalue())


class MMBenchCN(MMBench):
    name = "mmbench_cn"
    prompt_suffix = "\n请直接回答选项字母。"
    layout = {"questions": "mmbench_cn/mmbench_dev_cn_20231003.tsv"}
