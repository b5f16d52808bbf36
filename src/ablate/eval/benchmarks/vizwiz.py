"""VizWiz-VQA: VQA accuracy with "unanswerable" as an answer; test ground truth is the EvalAI server.

LLaVA-1.5 evaluates the test split: `write_submission` writes exactly LLaVA's upload file
([{image, answer}] with EvalAI-normalised answers). With the official val annotations (a list of
{image, question, answers[10], answer_type, answerable}) `score` reproduces the VizWiz script, which
normalises the prediction but compares against the reference answers as stored.
"""
from __future__ import annotations

from pathlib import Path

from ablate.eval.benchmarks.base import Question, field_of
from ablate.eval.benchmarks.vqav2 import VQAv2
from ablate.eval.normalize import normalize_answer
from ablate.eval.records import EvalInputError, read_json, read_jsonl, write_json

VIZWIZ_SUFFIX = ("\nWhen the provided information is insufficient, respond with 'Unanswerable'."
                 "\nAnswer the question using a single word or phrase.")


class VizWiz(VQAv2):
    name = "vizwiz"
    prompt_suffix = VIZWIZ_SUFFIX
    layout = {"questions": "vizwiz/llava_test.jsonl", "images": "vizwiz/test"}
    process_refs = False  # the VizWiz script compares against the stored references

    def load(self, root=None, *, questions=None, gt=None, images=None) -> list[Question]:
        p = self.paths(root, questions=questions, gt=gt, images=images)
        by_image = None
        if "gt" in p:
            doc = read_json(p["gt"])
            if not isinstance(doc, list):
                raise EvalInputError(p["gt"], "expected a JSON list of VizWiz annotations")
            by_image = {}
            for i, a in enumerate(doc):
                if not isinstance(a, dict) or "image" not in a or not isinstance(a.get("answers"), list):
                    raise EvalInputError(p["gt"], f"annotation #{i} lacks image or an answers list")
                by_image[a["image"]] = a
        out = []
        for lineno, rec in read_jsonl(p["questions"]):
            image = field_of(rec, "image", p["questions"], lineno)
            refs, meta = None, {"image": image}
            if by_image is not None:
                a = by_image.get(image)
                if a is None:
                    raise EvalInputError(p["questions"], f"image {image!r} has no annotation in {p['gt']}", lineno)
                refs = [x["answer"] if isinstance(x, dict) else str(x) for x in a["answers"]]
                meta["answer_type"] = a.get("answer_type", "other")
            out.append(Question(str(field_of(rec, "question_id", p["questions"], lineno)),
                                str(Path(p["images"]) / image),
                                self.with_suffix(field_of(rec, "text", p["questions"], lineno)), refs, meta))
        return out

    def write_submission(self, questions: list[Question], predictions: dict[str, str], out_path) -> Path:
        """LLaVA's upload file: [{image, answer}] in question order; every question must have an answer."""
        missing = [q.question_id for q in questions if q.question_id not in predictions]
        if missing:
            raise EvalInputError(None, f"vizwiz submission needs every answer; {len(missing)} missing "
                                       f"(first: {missing[0]!r})")
        rows = [{"image": q.meta["image"], "answer": normalize_answer(predictions[q.question_id])}
                for q in questions]
        return write_json(out_path, rows)
