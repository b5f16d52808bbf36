"""LlavaDataset: LLaVA's JSON conversation format (LCS-558K and llava_v1_5_mix665k alike) as model-ready samples.

Records are validated when the dataset is built, so a bad file fails before any compute with one error that
lists the first few bad records and how many there are. Each sample is a dict: input_ids (L,) long,
labels (L,) long, pixel_values (3, R, R) float, has_image bool. Text-only records (no "image") get zero pixels
and has_image False.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ablate.data import IMAGE_TOKEN, DataError
from ablate.data.conversation import ROLES, STAGES, Template, get_template
from ablate.data.image import preprocess_image

_SHOW = 5   # bad records quoted in an error


def read_json(path: str | os.PathLike) -> object:
    """Parse a JSON file; a DataError naming the file (and line/column) when missing or malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist. Fix: check the path in conf/data/ "
                        f"(or regenerate the synthetic data).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"data file {path} is not valid JSON{where} ({e}). Fix: re-download or regenerate it "
                        f"(a truncated download is the usual cause).") from None


def _problem(rec: object, image_folder: Path, check_images: bool) -> str | None:
    """Why a record is unusable, or None."""
    if not isinstance(rec, dict):
        return f"not an object but {type(rec).__name__}"
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "missing key 'conversations' (a non-empty list)"
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            return f"turn {k} is not {{'from': 'human'|'gpt', 'value': str}}"
    if not any(ROLES[t["from"]] == "assistant" for t in conv):
        return "no 'gpt' turn (nothing to learn)"
    if "image" in rec:
        if not isinstance(rec["image"], str) or not rec["image"]:
            return f"'image' is {rec['image']!r}, not a relative path"
        if check_images and not (image_folder / rec["image"]).is_file():
            return f"image {image_folder / rec['image']} not found"
    return None


def load_records(json_path, image_folder, check_images: bool = True) -> list[dict]:
    """The records of a LLaVA JSON file, all checked; one DataError lists the bad ones."""
    data = read_json(json_path)
    if not isinstance(data, list):
        raise DataError(f"data file {json_path}: expected a JSON list of records, got {type(data).__name__}. "
                        f"Fix: use LLaVA's format [{{'id', 'image', 'conversations'}}, ...].")
    folder = Path(image_folder)
    if check_images and any(isinstance(r, dict) and "image" in r for r in data) and not folder.is_dir():
        raise DataError(f"image folder {folder} (for {json_path}) does not exist. Fix: set the image folder "
                        f"key of conf/data/ to the folder the records' 'image' paths are relative to.")
    bad = []
    for i, rec in enumerate(data):
        why = _problem(rec, folder, check_images)
        if why:
            bad.append(f"#{i} (id={rec.get('id') if isinstance(rec, dict) else None!r}): {why}")
    if bad:
        raise DataError(f"data file {json_path}: {len(bad)} of {len(data)} records are unusable; first "
                        f"{min(len(bad), _SHOW)}: " + "; ".join(bad[:_SHOW]) +
                        ". Fix: repair or drop these records (or the image folder, if every image is missing).")
    return data


def normalize_conversation(conv: list[dict], has_image: bool) -> list[dict]:
    """LLaVA's preprocess_multimodal: exactly one ``<image>``, at the start of the first user turn that had it
    (or of the first user turn); none at all in text-only records."""
    out, placed = [], False
    for turn in conv:
        value = turn["value"]
        if ROLES[turn["from"]] == "user" and IMAGE_TOKEN in value:
            value = value.replace(IMAGE_TOKEN, "").strip()
            if has_image and not placed:
                value, placed = f"{IMAGE_TOKEN}\n{value}", True
        out.append({"from": turn["from"], "value": value})
    if has_image and not placed:
        first = next(i for i, t in enumerate(out) if ROLES[t["from"]] == "user")
        out[first] = {**out[first], "value": f"{IMAGE_TOKEN}\n{out[first]['value']}"}
    return out


class LlavaDataset(Dataset):
    """A LLaVA JSON file as (input_ids, labels, pixel_values, has_image) samples for one stage.

    ``max_length`` counts text tokens (the ``<image>`` placeholder is one); longer samples are cut at the end.
    """

    def __init__(self, json_path, image_folder, tokenizer, template: Template | str, stage: str, resolution: int,
                 image_mean, image_std, max_length: int | None = None, check_images: bool = True):
        if stage not in STAGES:
            raise DataError(f"stage={stage!r}: unknown stage. Fix: use one of {STAGES}.")
        self.json_path, self.image_folder = Path(json_path), Path(image_folder)
        self.records = load_records(json_path, image_folder, check_images)
        self.tokenizer = tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.stage, self.resolution, self.max_length = stage, int(resolution), max_length
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self._lengths = None

    @classmethod
    def from_config(cls, cfg, stage: str, tokenizer, paths: dict | None = None) -> "LlavaDataset":
        """The dataset of ``stage`` for a composed config (cfg.data, cfg.lm.template, cfg.encoder, resolution)."""
        from ablate.data import resolve_data
        paths = paths or resolve_data(cfg)
        align = stage == "align"
        return cls(paths["align_json" if align else "instruct_json"],
                   paths["align_image_folder" if align else "image_folder"], tokenizer, cfg.lm.template, stage,
                   cfg.resolution, cfg.encoder.image_mean, cfg.encoder.image_std, cfg.data.get("max_length"))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Cheap length estimates (words, + 1 for an image) for LengthGroupedSampler; no tokenization."""
        if self._lengths is None:
            self._lengths = [sum(len(t["value"].split()) for t in r["conversations"]) + ("image" in r)
                             for r in self.records]
        return self._lengths

    def text_sample(self, i: int) -> dict:
        """Sample ``i`` without pixels: input_ids, labels, has_image (a feature cache adds the image's features)."""
        rec = self.records[i]
        has_image = "image" in rec
        conv = normalize_conversation(rec["conversations"], has_image)
        ids, labels = self.template.encode(conv, self.tokenizer, self.stage)
        if self.max_length is not None and len(ids) > self.max_length:
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        if has_image and self.image_token_id not in ids:
            raise DataError(f"record {rec.get('id')!r} of {self.json_path}: the <image> placeholder was lost "
                            f"(tokenizer lacks {IMAGE_TOKEN!r}, or max_length cut it). Fix: use build_tokenizer.")
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "has_image": has_image}

    def image_path(self, i: int) -> Path | None:
        """The image file of sample ``i``, or None for a text-only record."""
        rec = self.records[i]
        return self.image_folder / rec["image"] if "image" in rec else None

    def pixel_values(self, i: int) -> torch.Tensor:
        """(3, R, R) preprocessed image of sample ``i`` (zeros for a text-only record)."""
        path = self.image_path(i)
        if path is None:
            return torch.zeros(3, self.resolution, self.resolution)
        return preprocess_image(path, self.resolution, self.image_mean, self.image_std,
                                record=self.records[i].get("id"))

    def __getitem__(self, i: int) -> dict:
        sample = self.text_sample(i)
        sample["pixel_values"] = self.pixel_values(i)
        return sample
