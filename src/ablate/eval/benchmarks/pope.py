"""POPE: yes/no object-existence questions, three negative-sampling splits, parsed as LLaVA's eval_pope.

Labels come from POPE's `<prefix>_pope_<split>.json` files (JSON lines: question_id, image, text, label).
LLaVA's eval_pope pairs the k-th answer of a split with the k-th label line; ablate pairs the k-th
*question* of a split with the k-th label line and checks that image and question text agree, so a
reordered answers file cannot silently shift labels. Metrics per split (accuracy, precision, recall, F1,
yes-ratio, all in percent) and their averages over the splits present; `f1` is the paper's POPE number.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_SHORT_ANSWER, Benchmark, Question, field_of
from ablate.eval.records import EvalInputError, read_jsonl

SPLITS = ("random", "popular", "adversarial")


def pope_parse(raw_output: str) -> str:
    """LLaVA's eval_pope rule: keep the first sentence, drop commas, "no" if a word is No/no/not.

    >>> pope_parse("No, there is no dog.")
    'no'
    >>> pope_parse("Yes. There is not a cat.")
    'yes'
    """
    text = raw_output
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio (percent) with "yes" as the positive class."""
    tp = sum(p == "yes" and l == "yes" for p, l in zip(preds, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(preds, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(preds, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(preds, labels))
    # eval_pope divides by zero here; a model that never says "yes" gets precision 0 instead of a crash.
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(preds)
    return {"accuracy": 100 * (tp + tn) / n, "precision": 100 * precision, "recall": 100 * recall,
            "f1": 100 * f1, "yes_ratio": 100 * preds.count("yes") / n}


def _core(text: str) -> str:
    return text.replace("<image>", "").replace(LLAVA_SHORT_ANSWER, "").strip()


class POPE(Benchmark):
    name = "pope"
    prompt_suffix = LLAVA_SHORT_ANSWER
    layout = {"questions": "pope/llava_pope_test.jsonl", "gt": "pope/coco", "images": "pope/val2014"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        labels = self._read_labels(p["gt"]) if "gt" in p else None
        seen: dict[str, int] = defaultdict(int)
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            split = field_of(rec, "category", p["questions"], lineno)
            text = field_of(rec, "text", p["questions"], lineno)
            image = field_of(rec, "image", p["questions"], lineno)
            label = None
            if labels is not None:
                if split not in labels:
                    raise EvalInputError(p["questions"], f"split {split!r} has no label file in {p['gt']}", lineno)
                k = seen[split]
                seen[split] += 1
                if k >= len(labels[split]):
                    raise EvalInputError(p["questions"], f"more {split!r} questions than labels", lineno)
                lab_line, lab = labels[split][k]
                if lab.get("image") != image or _core(lab.get("text", "")) != _core(text):
                    raise EvalInputError(p["questions"], f"question does not match label line {lab_line} of "
                                                         f"the {split!r} label file (image or text differ)", lineno)
                label = lab["label"]
            out.append(Question(str(field_of(rec, "question_id", p["questions"], lineno)),
                                str(Path(p["images"]) / image), self.with_suffix(text), label, {"split": split}))
        if labels is not None:
            for split, rows in labels.items():
                if seen[split] and seen[split] != len(rows):
                    raise EvalInputError(p["gt"], f"{split!r}: {len(rows)} labels but {seen[split]} questions")
        return out

    @staticmethod
    def _read_labels(gt_dir: Path) -> dict[str, list[tuple[int, dict]]]:
        if not gt_dir.is_dir():
            raise EvalInputError(gt_dir, "POPE label directory not found")
        labels = {}
        for split in SPLITS:
            files = sorted(gt_dir.glob(f"*_pope_{split}.json"))
            if len(files) > 1:
                raise EvalInputError(gt_dir, f"several label files for split {split!r}: {[f.name for f in files]}")
            if files:
                rows = read_jsonl(files[0])
                for lineno, r in rows:
                    if r.get("label") not in ("yes", "no"):
                        raise EvalInputError(files[0], f"label must be 'yes' or 'no', got {r.get('label')!r}", lineno)
                labels[split] = rows
        if not labels:
            raise EvalInputError(gt_dir, "no POPE label files (*_pope_random/popular/adversarial.json)")
        return labels

    def parse(self, raw_output: str) -> str:
        return pope_parse(raw_output)

    def score(self, questions, predictions):
        rows = self.checked_rows(questions, predictions)
        by_split: dict[str, list[dict]] = defaultdict(list)
        for q, r in zip(questions, rows):
            r["label"] = q.refs
            by_split[r["split"]].append(r)
        metrics: dict[str, float] = {}
        per_split = {}
        for split in [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS)):
            m = binary_metrics([r["parsed"] for r in by_split[split]], [r["label"] for r in by_split[split]])
            per_split[split] = m
            metrics.update({f"{split}/{k}": v for k, v in m.items()})
        for k in ("f1", "accuracy", "precision", "recall", "yes_ratio"):
            metrics[k] = sum(m[k] for m in per_split.values()) / len(per_split)
        return metrics, rows
