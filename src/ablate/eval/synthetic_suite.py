"""The synthetic benchmark suite: four small benchmarks written in official file layouts from eval scenes.

`build_suite(synthetic_root, out_root, seed)` reads `<synthetic_root>/eval_scenes.jsonl` (written by
`ablate.data.synthetic`) and writes, deterministically for a given seed:
* `synth_vqa`: colour / shape / count questions, ten reference answers each (one annotator sometimes
  disagrees, so the min(1, n/3) rule matters), in LLaVA's question JSON lines + the VQA annotation format;
* `synth_pope`: "Is there a <colour> <shape> in the image?" with POPE's three negative samplings:
  random, popular (most frequent absent objects) and adversarial (absent objects that co-occur most
  with the present ones), as LLaVA's question file plus `synth_pope_<split>.json` label files;
* `synth_mmb`: four-option questions as an MMBench TSV, each with its rotated copies for CircularEval;
* `synth_text`: "What is written in the image?" on scenes with rendered text, TextVQA's formats. The
  text is drawn small, so the benchmark rewards resolution. There is no OCR-token line (no OCR system).
Image paths in the question files are relative to each benchmark's folder, so the two roots can move
together. The registry's synth_* benchmarks load the result with `load(root=out_root)`.
"""
from __future__ import annotations

import base64
import io
import os
import random
from collections import Counter
from itertools import product
from pathlib import Path

from ablate.eval.benchmarks.base import LLAVA_SHORT_ANSWER
from ablate.eval.benchmarks.synthetic import SYNTH_LAYOUTS
from ablate.eval.records import EvalInputError, read_jsonl, write_json, write_jsonl, write_text

POPE_SPLITS = ("random", "popular", "adversarial")
POPE_MAX_POSITIVES = 3
CIRCULAR_MOD = 1_000_000


def build_suite(synthetic_root: str | os.PathLike, out_root: str | os.PathLike, seed: int = 0,
                colors: list[str] | None = None, shapes: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """Write the four synthetic benchmarks; returns {benchmark: {"questions", "gt"?, "images"}}.

    `colors`/`shapes` default to the generator's vocabularies (`ablate.data.synthetic.COLORS/SHAPES`),
    or, where that module is unavailable, to the words seen in the scenes.
    """
    syn, out = Path(synthetic_root), Path(out_root)
    scenes = read_scenes(syn / "eval_scenes.jsonl")
    colors, shapes = _vocab(scenes, colors, shapes)
    paths = {name: {k: out / v for k, v in layout.items()} for name, layout in SYNTH_LAYOUTS.items()}
    for name, p in paths.items():
        p.setdefault("images", p["questions"].parent)
    writers = {"synth_vqa": _write_vqa, "synth_pope": _write_pope, "synth_mmb": _write_mmb, "synth_text": _write_text}
    for name, write in writers.items():
        # One RNG per benchmark, so changing one benchmark's sampling leaves the others' files unchanged.
        rng = random.Random(f"ablate-synth-suite:{seed}:{name}")
        write(scenes, syn, paths[name], rng, colors, shapes)
    return paths


def read_scenes(path: Path) -> list[dict]:
    """Eval scene records, validated enough that every later step can trust them."""
    scenes = []
    for lineno, rec in read_jsonl(path):
        for key in ("scene_id", "image", "objects"):
            if key not in rec:
                raise EvalInputError(path, f"scene has no '{key}'", lineno)
        if not isinstance(rec["objects"], list):
            raise EvalInputError(path, "'objects' must be a list", lineno)
        for i, obj in enumerate(rec["objects"]):
            if not isinstance(obj, dict) or not {"shape", "color"} <= set(obj):
                raise EvalInputError(path, f"object #{i} needs 'shape' and 'color'", lineno)
        if not (path.parent / rec["image"]).is_file():
            raise EvalInputError(path, f"image {rec['image']!r} not found under {path.parent}", lineno)
        scenes.append(rec)
    if not scenes:
        raise EvalInputError(path, "no scenes")
    return scenes


def _vocab(scenes, colors, shapes):
    if colors is None or shapes is None:
        try:
            from ablate.data import synthetic as gen

            colors, shapes = colors or list(gen.COLORS), shapes or list(gen.SHAPES)
        except (ImportError, AttributeError):
            seen_c = sorted({o["color"] for s in scenes for o in s["objects"]})
            seen_s = sorted({o["shape"] for s in scenes for o in s["objects"]})
            colors, shapes = colors or seen_c, shapes or seen_s
    return list(colors), list(shapes)


def _rel_image(syn: Path, scene: dict, bench_dir: Path) -> str:
    return os.path.relpath(syn / scene["image"], bench_dir)


def _unique(objects: list[dict], attr: str) -> list[dict]:
    counts = Counter(o[attr] for o in objects)
    return [o for o in objects if counts[o[attr]] == 1]


def _vqa_questions(scene: dict, rng: random.Random, colors, shapes) -> list[tuple[str, str, str, str, str]]:
    """(question, answer, a plausible wrong answer, question_type, answer_type) for one scene."""
    objs, out = scene["objects"], []
    n = len(objs)
    out.append(("How many objects are there in the image?", str(n), str(n + 1), "how many", "number"))
    by_shape = _unique(objs, "shape")
    if by_shape:
        o = rng.choice(by_shape)
        alt = rng.choice([c for c in colors if c != o["color"]] or [o["color"]])
        out.append((f"What color is the {o['shape']}?", o["color"], alt, "what color is the", "other"))
    by_color = _unique(objs, "color")
    if by_color:
        o = rng.choice(by_color)
        alt = rng.choice([s for s in shapes if s != o["shape"]] or [o["shape"]])
        out.append((f"What shape is the {o['color']} object?", o["shape"], alt, "what shape is the", "other"))
    return out


def _write_vqa(scenes, syn, p, rng, colors, shapes):
    questions, annotations, qid = [], [], 0
    for scene in scenes:
        for text, answer, alt, qtype, atype in _vqa_questions(scene, rng, colors, shapes):
            refs = [answer] * 10
            if rng.random() < 0.3:  # one annotator disagrees: a perfect answer still scores 1.0
                refs[rng.randrange(10)] = alt
            questions.append({"question_id": qid, "image": _rel_image(syn, scene, p["images"]),
                              "text": text + LLAVA_SHORT_ANSWER, "category": "default"})
            annotations.append({"question_id": qid, "image_id": scene["scene_id"], "question_type": qtype,
                                "answer_type": atype, "multiple_choice_answer": answer,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                            for i, a in enumerate(refs)]})
            qid += 1
    write_jsonl(p["questions"], questions)
    write_json(p["gt"], {"info": {"description": "ablate synthetic VQA"}, "data_subtype": "synthetic",
                         "annotations": annotations})


def _pope_negatives(split, present, categories, freq, cooc, k, rng):
    absent = sorted(c for c in categories if c not in present)
    if split == "random":
        return rng.sample(absent, min(k, len(absent)))
    if split == "popular":
        ranked = sorted(absent, key=lambda c: (-freq[c], c))
    else:  # adversarial: objects that most often share a scene with the ones present
        ranked = sorted(absent, key=lambda c: (-sum(cooc[(p, c)] for p in present), -freq[c], c))
    return ranked[:k]


def _write_pope(scenes, syn, p, rng, colors, shapes):
    categories = [f"{c} {s}" for c, s in product(colors, shapes)]
    present_of = [sorted({f"{o['color']} {o['shape']}" for o in s["objects"]}) for s in scenes]
    freq = Counter(c for present in present_of for c in present)
    cooc = Counter((a, b) for present in present_of for a in present for b in present if a != b)
    questions, qid = [], 1
    labels = {split: [] for split in POPE_SPLITS}
    for split in POPE_SPLITS:
        for scene, present in zip(scenes, present_of):
            positives = rng.sample(present, min(POPE_MAX_POSITIVES, len(present)))
            negatives = _pope_negatives(split, present, categories, freq, cooc, len(positives), rng)
            pairs = [(c, "yes") for c in positives]
            # Alternate yes/no as POPE does, so position in the file says nothing about the label.
            ordered = [x for pair in zip(pairs, [(c, "no") for c in negatives]) for x in pair]
            ordered += pairs[len(negatives):]
            image = _rel_image(syn, scene, p["images"])
            for obj, label in ordered:
                text = f"Is there a {obj} in the image?"
                questions.append({"question_id": qid, "image": image, "text": text + LLAVA_SHORT_ANSWER,
                                  "category": split})
                labels[split].append({"question_id": len(labels[split]) + 1, "image": image, "text": text,
                                      "label": label})
                qid += 1
    write_jsonl(p["questions"], questions)
    for split, rows in labels.items():
        write_jsonl(p["gt"] / f"synth_pope_{split}.json", rows)


def _mmb_item(scene, rng, colors):
    """(question, correct option, 3 distractors, category) for one scene."""
    by_shape = _unique(scene["objects"], "shape")
    if by_shape and len(colors) >= 4:
        o = rng.choice(by_shape)
        wrong = rng.sample([c for c in colors if c != o["color"]], 3)
        return f"What color is the {o['shape']}?", o["color"], wrong, "color_recognition"
    n = len(scene["objects"])
    wrong = rng.sample([str(x) for x in range(max(0, n - 2), n + 4) if x != n], 3)
    return "How many objects are there in the image?", str(n), wrong, "counting"


def _write_mmb(scenes, syn, p, rng, colors, shapes):
    import pandas as pd

    letters = ("A", "B", "C", "D")
    rows = []
    for base, scene in enumerate(scenes):
        question, right, wrong, category = _mmb_item(scene, rng, colors)
        options = [right] + wrong
        rng.shuffle(options)
        image = base64.b64encode((syn / scene["image"]).read_bytes()).decode("ascii")
        for k in range(len(options)):  # copy k rotates the options k places: every option sits at every letter
            rotated = options[k:] + options[:k]
            rows.append({"index": base + k * CIRCULAR_MOD, "question": question, "hint": None,
                         **dict(zip(letters, rotated)), "answer": letters[rotated.index(right)],
                         "category": category, "l2-category": "perception", "image": image,
                         "source": "ablate-synthetic", "split": "dev", "comment": None})
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, sep="\t", index=False)
    write_text(p["questions"], buf.getvalue())


def _write_text(scenes, syn, p, rng, colors, shapes):
    question = "What is written in the image?"
    questions, data = [], []
    for scene in scenes:
        if not scene.get("text"):
            continue
        image = _rel_image(syn, scene, p["images"])
        questions.append({"question_id": scene["scene_id"], "image": image, "text": question + LLAVA_SHORT_ANSWER,
                          "category": "default"})
        data.append({"question_id": len(data), "image_id": scene["scene_id"], "question": question,
                     "answers": [scene["text"]] * 10, "image_width": scene.get("size"),
                     "image_height": scene.get("size"), "text_px": scene.get("text_px")})
    if not questions:
        raise EvalInputError(None, "synth_text: no eval scene carries text, so the benchmark would be empty")
    write_jsonl(p["questions"], questions)
    write_json(p["gt"], {"dataset_type": "val", "dataset_name": "ablate-synthetic", "dataset_version": "1",
                         "data": data})


__all__ = ["build_suite", "read_scenes"]
