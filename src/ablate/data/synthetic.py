"""Synthetic shapes dataset: scenes, captions and question-answer conversations in LLaVA's JSON formats.

Every scene draws from its own RNG seeded by (generator version, seed, split, index), so a dataset is a pure
function of its settings; ``generate`` writes it under a directory named by a hash of those settings.
Details that only survive at high resolution are built in on purpose (small shapes of 10-14 px, 7-px text),
so that resolution is a design choice that visibly matters even at tiny scale.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ablate.data import DataError
from ablate.data.render import (COLORS, MAX_RADIUS, POSITIONS, SHAPES, SIZE, SIZES, TEXT_DIGITS,  # noqa: F401
                               TEXT_LETTERS, render_scene, sample_scene)

GENERATOR_VERSION = 1   # bump whenever a change here or in render.py changes what gets written
POS_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
              "center": "in the center"}

SHORT_SUFFIX = "Answer the question using a single word or phrase."
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
CAPTION_REQUESTS = ["Describe the image briefly.", "Write a short caption for this image.",
                    "What is shown in the picture?", "Give a brief description of the image.",
                    "Summarize the image in one sentence.", "Provide a concise caption for the picture."]
QUESTION_TYPES = ["color_at", "shape_at", "color_of", "shape_of", "where", "count", "size", "exists",
                  "text_present", "text_read", "mc_color", "describe"]

# Generator settings (these keys + GENERATOR_VERSION name the dataset directory). Mostly single-object scenes with
# large objects, a colour-heavy mix and 6-8 questions per image, so a random-init tiny cell learns to read colours
# within its 400 stage-2 steps at batch 16 (docs/data.md, "Learnability").
DEFAULTS = {
    "seed": 0,
    "num_train": 1000,
    "num_eval": 200,
    "count_weights": [0.8, 0.15, 0.05],   # P(1 object), P(2), P(3), ... (at most 5: one per position)
    "small_prob": 0.3,                    # chance that an object is small
    "large_r": [44, 56],                  # radius range (px at 448) of large objects
    "small_r": [5, 7],                    # of small ones: 10-14 px across, 5-7 px after downsampling to 224
    "text_prob": 0.5,                     # chance that a scene carries a two-character code
    "text_px": [7, 14],                   # glyph heights to draw the code with (multiples of 7)
    "turns": [6, 8],                      # question-answer turns per instruct conversation (min, max)
    "eval_questions_per_scene": 2,
    "question_weights": {"color_at": 3, "color_of": 3, "shape_at": 1, "shape_of": 1, "where": 1, "count": 1,
                         "size": 1, "exists": 1, "text_present": 1, "text_read": 0.5, "mc_color": 1,
                         "describe": 0.25},
}


def scene_rng(settings: dict, split: str, index: int, purpose: str) -> random.Random:
    """An RNG private to one scene and purpose; str seeds are hashed with SHA-512, so stable across runs."""
    return random.Random(f"ablate-synthetic:{GENERATOR_VERSION}:{settings['seed']}:{split}:{index}:{purpose}")


def caption(scene: dict, rng: random.Random) -> str:
    """One-sentence description naming every object's size, colour, shape and position (plus the text)."""
    parts = [f"a {o['size']} {o['color']} {o['shape']} {POS_PHRASE[o['position']]}" for o in scene["objects"]]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    body = rng.choice(["", "The image shows "]) + body + "."
    out = body[0].upper() + body[1:]
    if scene["text"]:
        out += f" The text {scene['text']} is written in a corner."
    return out


def ask(qtype: str, scene: dict, rng: random.Random) -> tuple[str, str, str | None] | None:
    """(question, answer, size of the object asked about) for one question type, or None if it doesn't apply."""
    objs, o = scene["objects"], rng.choice(scene["objects"])
    short = "\n" + SHORT_SUFFIX
    if qtype == "color_at":
        return f"What color is the shape {POS_PHRASE[o['position']]}?" + short, o["color"], o["size"]
    if qtype == "shape_at":
        return f"What shape is {POS_PHRASE[o['position']]}?" + short, o["shape"], o["size"]
    if qtype == "color_of":
        return f"What color is the {o['shape']}?" + short, o["color"], o["size"]
    if qtype == "shape_of":
        return f"Which shape is {o['color']}?" + short, o["shape"], o["size"]
    if qtype == "where":
        return f"Where is the {o['color']} {o['shape']}?" + short, o["position"], o["size"]
    if qtype == "count":
        return "How many shapes are there?" + short, str(len(objs)), None
    if qtype == "size":
        return f"Is the {o['color']} {o['shape']} large or small?" + short, o["size"], o["size"]
    if qtype == "exists":
        if rng.random() < 0.5:
            return f"Is there a {o['color']} {o['shape']} in the image?" + short, "yes", o["size"]
        present = {(x["color"], x["shape"]) for x in objs}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        c, s = rng.choice(absent)
        return f"Is there a {c} {s} in the image?" + short, "no", None
    if qtype == "text_present":
        return "Is there any text in the image?" + short, "yes" if scene["text"] else "no", None
    if qtype == "text_read":
        if not scene["text"]:
            return None
        return "What text is written in the image?" + short, scene["text"], None
    if qtype == "mc_color":
        options = rng.sample([c for c in COLORS if c != o["color"]], 2) + [o["color"]]
        rng.shuffle(options)
        letters = "ABC"
        lines = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(options))
        answer = letters[options.index(o["color"])]
        return f"What color is the {o['shape']}?\n{lines}\n{MC_SUFFIX}", answer, o["size"]
    if qtype == "describe":
        return "Describe the image briefly.", caption(scene, rng), None
    raise ValueError(f"unknown question type {qtype!r}")


def _sample_questions(scene: dict, rng: random.Random, weights: dict, k: int) -> list[tuple[str, str, str, str]]:
    """Up to k distinct (type, question, answer, target_size) tuples, types drawn by weight."""
    types = [t for t in QUESTION_TYPES if weights.get(t, 0) > 0]
    w = [weights[t] for t in types]
    out, seen = [], set()
    for _ in range(8 * k):   # bounded retries: single-object scenes have few distinct questions
        t = rng.choices(types, weights=w)[0]
        qa = ask(t, scene, rng)
        if qa is None or qa[0] in seen:
            continue
        seen.add(qa[0])
        out.append((t, *qa))
        if len(out) == k:
            break
    return out


def align_record(scene: dict, settings: dict, split: str, index: int) -> dict:
    """Stage-1 record in LCS-558K's format: a caption request and the caption."""
    rng = scene_rng(settings, split, index, "align")
    request = rng.choice(CAPTION_REQUESTS)
    # LCS-558K puts the image token before or after the request; the dataset moves it to the front
    human = f"<image>\n{request}" if rng.random() < 0.8 else f"{request}\n<image>"
    return {"id": scene["scene_id"], "image": scene["image"],
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": caption(scene, rng)}]}


def instruct_record(scene: dict, settings: dict, split: str, index: int) -> dict:
    """Stage-2 record in llava_v1_5_mix665k's format: a multi-turn conversation about one image."""
    rng = scene_rng(settings, split, index, "instruct")
    k = rng.randint(*settings["turns"])
    conv = []
    for i, (_, q, a, _) in enumerate(_sample_questions(scene, rng, settings["question_weights"], k)):
        conv += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return {"id": scene["scene_id"], "image": scene["image"], "conversations": conv}


def eval_records(scene: dict, settings: dict, index: int) -> list[dict]:
    """Held-out single-turn questions (no captions: exact match needs short answers), tagged by type."""
    rng = scene_rng(settings, "eval", index, "questions")
    weights = {**settings["question_weights"], "describe": 0}
    qs = _sample_questions(scene, rng, weights, settings["eval_questions_per_scene"])
    return [{"id": f"{scene['scene_id']}-q{j}", "image": scene["image"], "type": t, "target_size": size,
             "conversations": [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]}
            for j, (t, q, a, size) in enumerate(qs)]


def corpus_strings() -> list[str]:
    """Every word the generator can emit, for the word-level tokenizer: the value lists, plus every question
    type and caption asked about one sample scene (the templates' fixed words are the same for every scene)."""
    scene = {"objects": [{"shape": SHAPES[0], "color": COLORS[0], "size": "large", "position": POSITIONS[0]}],
             "text": "K7"}
    rng = random.Random(0)
    out = SHAPES + COLORS + POSITIONS + SIZES + CAPTION_REQUESTS + [str(i) for i in range(1, len(POSITIONS) + 1)]
    out += ["A B C yes no The image shows"] + [a + d for a in TEXT_LETTERS for d in TEXT_DIGITS]
    for t in QUESTION_TYPES:
        out += [" ".join(ask(t, scene, rng)[:2]) for _ in range(4)]   # 4 draws: both branches of "exists"
    return out + [caption({**scene, "objects": scene["objects"] * 2}, rng) for _ in range(4)]


def _plain(value):
    # OmegaConf containers -> plain lists/dicts, so that settings hash and compare like literals
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        return OmegaConf.to_container(value, resolve=True)
    return value


def settings_from(data_cfg) -> dict:
    """The generator settings of a data config (defaults filled in), checked; raises DataError naming the key."""
    s = {k: _plain(data_cfg.get(k, v)) for k, v in DEFAULTS.items()}
    def bad(key, why):
        return DataError(f"data.{key}={s[key]!r}: {why}. Fix: set data.{key} in conf/data/synthetic.yaml "
                         f"or on the command line (default {DEFAULTS[key]!r}).")
    for key in ("seed", "num_train", "num_eval", "eval_questions_per_scene"):
        if not isinstance(s[key], int) or s[key] < (1 if key == "num_train" else 0):
            raise bad(key, "must be a non-negative integer" + (" >= 1" if key == "num_train" else ""))
    for key in ("small_prob", "text_prob"):
        if not isinstance(s[key], (int, float)) or not 0 <= s[key] <= 1:
            raise bad(key, "must be a probability in [0, 1]")
    cw = s["count_weights"]
    if not isinstance(cw, list) or not 1 <= len(cw) <= len(POSITIONS) or min(cw) < 0 or sum(cw) <= 0:
        raise bad("count_weights", f"must be 1-{len(POSITIONS)} non-negative weights with a positive sum")
    if not isinstance(s["text_px"], list) or not s["text_px"] or any(
            not isinstance(p, int) or p < 7 or p % 7 for p in s["text_px"]):
        raise bad("text_px", "must be a non-empty list of positive multiples of 7 (the font is 7 px tall)")
    for key in ("large_r", "small_r"):
        r = s[key]
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)
                and 2 <= r[0] <= r[1] <= MAX_RADIUS):
            raise bad(key, f"must be [min, max] integers with 2 <= min <= max <= {MAX_RADIUS} (or regions overlap)")
    if s["small_r"][1] >= s["large_r"][0]:
        raise bad("small_r", f"must stay below large_r={s['large_r']}")
    t = s["turns"]
    if not isinstance(t, list) or len(t) != 2 or not 1 <= t[0] <= t[1]:
        raise bad("turns", "must be [min, max] with 1 <= min <= max")
    qw = s["question_weights"]
    if not isinstance(qw, dict) or set(qw) - set(QUESTION_TYPES) or sum(qw.values()) <= 0:
        raise bad("question_weights", f"must map some of {QUESTION_TYPES} to non-negative weights")
    return s


def settings_key(settings: dict) -> str:
    """12 hex digits naming a dataset: a hash of the generator version and every generator setting."""
    blob = json.dumps({"generator_version": GENERATOR_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SyntheticPaths:
    """Where one generated dataset lives; image paths in the JSON files are relative to ``root``."""
    root: Path

    align_json = property(lambda self: self.root / "align.json")
    instruct_json = property(lambda self: self.root / "instruct.json")
    eval_json = property(lambda self: self.root / "eval.json")
    eval_scenes = property(lambda self: self.root / "eval_scenes.jsonl")
    train_scenes = property(lambda self: self.root / "train_scenes.jsonl")
    manifest = property(lambda self: self.root / "manifest.json")
    image_folder = property(lambda self: self.root)

    def as_dict(self) -> dict[str, str]:
        return {k: str(getattr(self, k)) for k in ("align_json", "instruct_json", "eval_json", "eval_scenes",
                                                      "train_scenes", "image_folder")}


def _write(tmp: Path, settings: dict) -> None:
    (tmp / "images").mkdir(parents=True)
    scenes = {}
    for split, n in (("train", settings["num_train"]), ("eval", settings["num_eval"])):
        scenes[split] = []
        for i in range(n):
            scene, info = sample_scene(scene_rng(settings, split, i, "scene"), f"{split}-{i:06d}", settings)
            render_scene(scene, info["background"], info["text_xy"]).save(tmp / scene["image"], format="PNG")
            scenes[split].append(scene)
        (tmp / f"{split}_scenes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenes[split]))
    train = list(enumerate(scenes["train"]))
    evals = [r for i, s in enumerate(scenes["eval"]) for r in eval_records(s, settings, i)]
    files = {"align.json": [align_record(s, settings, "train", i) for i, s in train],
             "instruct.json": [instruct_record(s, settings, "train", i) for i, s in train], "eval.json": evals,
             # written last: its presence is what "complete" means
             "manifest.json": {"generator_version": GENERATOR_VERSION, "key": settings_key(settings),
                               "settings": settings, "num_train": len(train), "num_eval_questions": len(evals)}}
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=1) + "\n")


@contextmanager
def _locked(path: Path):
    # one writer per dataset; the atomic rename in generate keeps readers safe even where flock is a no-op (NFS)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)   # released when fh closes
        yield


def generate(data_cfg, root: str | os.PathLike | None = None) -> SyntheticPaths:
    """Generate (or find) the dataset for ``data_cfg`` under ``<root>/data/synthetic-<key>``; root defaults to
    ``data_cfg.root``. Returns at once when it is already complete; safe to call from several processes."""
    settings = settings_from(data_cfg)
    base = root if root is not None else data_cfg.get("root")
    if not base:
        raise DataError("data.root is not set: the synthetic data needs a directory to live in. "
                        "Fix: set data.root (default ${paths.data_root}) or ABLATE_ROOT.")
    key = settings_key(settings)
    parent = Path(base).expanduser().resolve() / "data"
    paths = SyntheticPaths(parent / f"synthetic-{key}")
    if paths.manifest.is_file():
        return paths
    parent.mkdir(parents=True, exist_ok=True)
    with _locked(parent / f".synthetic-{key}.lock"):
        if paths.manifest.is_file():          # another process finished while we waited
            return paths
        if paths.root.exists():
            raise DataError(f"{paths.root} exists but has no manifest.json (an interrupted copy?). "
                            f"Fix: delete that directory and run again.")
        tmp = parent / f".synthetic-{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write(tmp, settings)
            os.rename(tmp, paths.root)       # atomic: readers see nothing or everything
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if paths.manifest.is_file():      # lost a race where locking is unsupported: theirs is identical
                return paths
            raise
    return paths
