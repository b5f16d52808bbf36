"""MME: yes/no questions in pairs per image; per-subtask acc and acc+, perception and cognition sums.

Scored as MME's eval_tool/calculation.py: the lower-cased answer is "yes"/"no" if it is exactly that,
otherwise the first four characters decide ("yes" before "no"), otherwise it is "other" (wrong). Per
subtask, acc = correct questions / questions and acc+ = images with both questions right / images; the
subtask score is 100 * (acc + acc+). Perception sums 10 subtasks, cognition 4.

LLaVA's `llava_mme.jsonl` uses the image path as `question_id`, shared by both questions of an image, so a
question is identified by (image path, question text); ablate's question id is "<image path>::<question>".
Ground truth: a directory holding either MME's release layout (`<subtask>/[questions_answers_YN/]<img>.txt`
with "question<TAB>answer" lines) or one `<subtask>.txt` per subtask with "image<TAB>question<TAB>answer".
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_SHORT_ANSWER, Benchmark, Question, field_of
from ablate.eval.records import EvalInputError, read_jsonl

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
KEY_SEP = "::"
_WS = re.compile(r"\s+")


def mme_parse(raw_output: str) -> str:
    """MME's rule: exact yes/no, else look for "yes" then "no" in the first four characters.

    >>> mme_parse("Yes, it is.")
    'yes'
    >>> mme_parse("There is no cat")
    'other'
    """
    ans = raw_output.lower()
    if ans in ("yes", "no"):
        return ans
    head = ans[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def question_core(text: str) -> str:
    """The question without LLaVA's suffix or MME's "Please answer yes or no.", spaces collapsed."""
    text = text.replace("<image>", "").replace(LLAVA_SHORT_ANSWER, "").replace("Please answer yes or no.", "")
    return _WS.sub(" ", text).strip()


def read_mme_ground_truth(gt_dir: Path) -> dict[tuple[str, str, str], str]:
    """{(subtask, image file stem, question core): "yes"/"no"} from either supported layout.

    Images are matched by file stem: the release layout names each answer file after its image
    ("0001.txt" for "0001.jpg"), whatever the image's extension.
    """
    if not gt_dir.is_dir():
        raise EvalInputError(gt_dir, "MME ground-truth directory not found")
    gold: dict[tuple[str, str, str], str] = {}
    flat = sorted(f for f in gt_dir.glob("*.txt") if f.stem in PERCEPTION + COGNITION)
    if flat:
        for f in flat:
            for lineno, parts in _tab_lines(f, 3):
                gold[(f.stem, Path(parts[0]).stem, question_core(parts[1]))] = _yes_no(parts[2], f, lineno)
        return gold
    for subtask in PERCEPTION + COGNITION:
        sub = gt_dir / subtask
        qa_dir = sub / "questions_answers_YN" if (sub / "questions_answers_YN").is_dir() else sub
        for f in sorted(qa_dir.glob("*.txt")):
            for lineno, parts in _tab_lines(f, 2):
                gold[(subtask, f.stem, question_core(parts[0]))] = _yes_no(parts[1], f, lineno)
    if not gold:
        raise EvalInputError(gt_dir, "no MME ground truth found (neither <subtask>.txt files nor the release layout)")
    return gold


def _tab_lines(path: Path, n: int):
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != n:
                raise EvalInputError(path, f"expected {n} tab-separated fields, got {len(parts)}", lineno)
            yield lineno, parts


def _yes_no(answer: str, path: Path, lineno: int) -> str:
    a = answer.strip().lower()
    if a not in ("yes", "no"):
        raise EvalInputError(path, f"ground truth must be Yes or No, got {answer!r}", lineno)
    return a


class MME(Benchmark):
    name = "mme"
    prompt_suffix = LLAVA_SHORT_ANSWER
    layout = {"questions": "MME/llava_mme.jsonl", "gt": "MME/MME_Benchmark_release_version",
              "images": "MME/MME_Benchmark_release_version"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        gold = read_mme_ground_truth(p["gt"]) if "gt" in p else None
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            image = field_of(rec, "image", p["questions"], lineno)
            subtask = field_of(rec, "category", p["questions"], lineno)
            if subtask not in PERCEPTION + COGNITION:
                raise EvalInputError(p["questions"], f"unknown MME subtask {subtask!r}", lineno)
            text = field_of(rec, "text", p["questions"], lineno)
            refs = None
            if gold is not None:
                refs = gold.get((subtask, Path(image).stem, question_core(text)))
                if refs is None:
                    raise EvalInputError(p["questions"], f"no ground truth for {image!r}: {question_core(text)!r}",
                                         lineno)
            qid = self._key(field_of(rec, "question_id", p["questions"], lineno), text)
            out.append(Question(qid, str(Path(p["images"]) / image), self.with_suffix(text), refs,
                                {"subtask": subtask, "image": image}))
        return out

    @staticmethod
    def _key(raw_id, text: str) -> str:
        raw = str(raw_id)
        return raw if KEY_SEP in raw else f"{raw}{KEY_SEP}{question_core(text)}"

    def answer_key(self, record: dict) -> str:
        raw = str(record["question_id"])
        if KEY_SEP in raw:
            return raw
        if "prompt" not in record:
            raise ValueError("an MME answer needs 'prompt' (both questions of an image share the image id)")
        return self._key(raw, record["prompt"])

    def parse(self, raw_output: str) -> str:
        return mme_parse(raw_output)

    def score(self, questions, predictions):
        rows = self.checked_rows(questions, predictions)
        # subtask -> image -> scores of its questions (two per image in MME)
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            groups[r["subtask"]][r["image"]].append(r["score"])
        metrics: dict[str, float] = {}
        for subtask, images in groups.items():
            scores = [s for per_image in images.values() for s in per_image]
            acc = 100 * sum(scores) / len(scores)
            acc_plus = 100 * sum(all(s == 1.0 for s in v) for v in images.values()) / len(images)
            metrics.update({f"{subtask}/acc": acc, f"{subtask}/acc_plus": acc_plus, f"{subtask}/score": acc + acc_plus})
        metrics["perception"] = sum(metrics.get(f"{t}/score", 0.0) for t in PERCEPTION)
        metrics["cognition"] = sum(metrics.get(f"{t}/score", 0.0) for t in COGNITION)
        return metrics, rows
