"""TextVQA: reading text in images, scored as the official TextVQA (m4c) evaluator does.

Both the prediction and the ten references go through the EvalAI answer processor; the score is the
leave-one-out VQA accuracy of the prediction. LLaVA-1.5's question file (`llava_textvqa_val_v051_ocr.jsonl`)
adds the OCR-token line ("Reference OCR token: ...") to each question, and uses the *image* id as
`question_id`, so two questions on one image share it: as LLaVA's eval_textvqa does, a question is
identified by (image id, lower-cased question text), and ablate's question id is "<image id>::<question>".
"""
from __future__ import annotations

from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_SHORT_ANSWER, Benchmark, Question, field_of
from ablate.eval.benchmarks.vqav2 import leave_one_out
from ablate.eval.normalize import normalize_answer
from ablate.eval.records import EvalInputError, read_json, read_jsonl

KEY_SEP = "::"


def textvqa_question(prompt: str) -> str:
    """The bare question inside a LLaVA TextVQA prompt (LLaVA's eval_textvqa rule), lower-cased."""
    text = prompt.replace("<image>", "").strip()
    lines = text.split("\n")
    if text.startswith("OCR tokens: ") and "Question: " in text:
        question = text.split("Question: ", 1)[1].split(" Short answer:", 1)[0]
    elif "Reference OCR token: " in text and len(lines) == 3:
        question = lines[1] if text.startswith("Reference OCR token:") else lines[0]
    elif len(lines) <= 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt layout: {prompt[:80]!r}")
    return question.lower()


def textvqa_accuracy(prediction: str, references: list[str]) -> float:
    """m4c TextVQA accuracy: EvalAI-normalise everything, then leave-one-out min(1, matches / 3).

    >>> textvqa_accuracy("Coca-Cola", ["coca cola"] * 10)
    1.0
    """
    if not references:
        raise EvalInputError(None, "a TextVQA question has no reference answers")
    return leave_one_out(normalize_answer(prediction), [normalize_answer(r) for r in references])


class TextVQA(Benchmark):
    name = "textvqa"
    prompt_suffix = LLAVA_SHORT_ANSWER
    layout = {"questions": "textvqa/llava_textvqa_val_v051_ocr.jsonl", "gt": "textvqa/TextVQA_0.5.1_val.json",
              "images": "textvqa/train_images"}

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        refs_by_key = None
        if "gt" in p:
            doc = read_json(p["gt"])
            data = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(data, list):
                raise EvalInputError(p["gt"], "expected an object with a 'data' list (official TextVQA format)")
            refs_by_key = {}
            for i, a in enumerate(data):
                if not all(k in a for k in ("image_id", "question", "answers")):
                    raise EvalInputError(p["gt"], f"entry #{i} lacks image_id, question or answers")
                refs_by_key[f"{a['image_id']}{KEY_SEP}{a['question'].lower()}"] = a["answers"]
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            text = field_of(rec, "text", p["questions"], lineno)
            try:
                key = self._key(field_of(rec, "question_id", p["questions"], lineno), text)
            except ValueError as e:
                raise EvalInputError(p["questions"], str(e), lineno) from None
            refs = None
            if refs_by_key is not None:
                refs = refs_by_key.get(key)
                if refs is None:
                    raise EvalInputError(p["questions"], f"question {key!r} has no entry in {p['gt']}", lineno)
            out.append(Question(key, str(Path(p["images"]) / field_of(rec, "image", p["questions"], lineno)),
                                self.with_suffix(text), refs, {}))
        return out

    @staticmethod
    def _key(raw_id, prompt: str) -> str:
        raw = str(raw_id)
        return raw if KEY_SEP in raw else f"{raw}{KEY_SEP}{textvqa_question(prompt)}"

    def answer_key(self, record: dict) -> str:
        raw = str(record["question_id"])
        if KEY_SEP in raw:
            return raw
        if "prompt" not in record:
            raise ValueError("a TextVQA answer needs 'prompt' (image ids are shared between questions)")
        return self._key(raw, record["prompt"])

    def parse(self, raw_output: str) -> str:
        return normalize_answer(raw_output)

    def score_one(self, parsed: str, refs: list[str]) -> float:
        # `parsed` is already EvalAI-normalised; normalising it twice could differ ("'s" spacing).
        if not refs:
            raise EvalInputError(None, "a TextVQA question has no reference answers")
        return leave_one_out(parsed, [normalize_answer(r) for r in refs])

