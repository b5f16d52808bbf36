"""ablate.data: synthetic and LLaVA data, tokenizers, conversation templates, datasets and collation.

``resolve_data(cfg)`` is the one entry the run calls before any compute: it returns the paths of both stages'
data (generating the synthetic set when needed) or raises one DataError that names the key and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path


class DataError(ValueError):
    """Bad data or data config; the message names the file, record or key and says how to fix it."""


IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100

# keys of conf/data/llava.yaml that must exist before training, and what each should be
_LLAVA_PATHS = {
    "align_json": ("file", "LCS-558K captions, blip_laion_cc_sbu_558k.json from liuhaotian/LLaVA-Pretrain"),
    "align_image_folder": ("dir", "the unpacked images.zip of liuhaotian/LLaVA-Pretrain"),
    "instruct_json": ("file", "llava_v1_5_mix665k.json from liuhaotian/LLaVA-Instruct-150K"),
    "image_folder": ("dir", "the folder holding coco/, gqa/, ocr_vqa/, textvqa/ and vg/ (LLaVA-1.5 README)"),
}


def resolve_data(cfg) -> dict[str, str]:
    """Paths of the data of ``cfg.data``: align_json, align_image_folder, instruct_json, image_folder, and
    for synthetic data also eval_json and eval_scenes. Cheap when the data exists; safe to call first."""
    data = cfg.data
    name = data.get("name")
    if name == "synthetic":
        from ablate.data.synthetic import generate
        paths = generate(data).as_dict()
        # one folder serves both stages: image paths in every JSON are relative to the dataset root
        return {**paths, "align_image_folder": paths["image_folder"]}
    if name == "llava":
        out, missing = {}, []
        for key, (kind, what) in _LLAVA_PATHS.items():
            value = data.get(key)
            path = Path(os.path.expanduser(str(value))) if value else None
            if path is not None and (path.is_file() if kind == "file" else path.is_dir()):
                out[key] = str(path.resolve())
            else:
                missing.append(f"data.{key}={value!r} (no such {kind}; expected {what})")
        if missing:
            # every missing path at once, so one fix-up round is enough
            raise DataError("LLaVA data not found: " + "; ".join(missing) + ". Fix: download it and set "
                            "data.<key>=<path>, or ABLATE_DATA=<dir> for the layout in conf/data/llava.yaml.")
        return out
    raise DataError(f"data.name={name!r}: unknown data option. Fix: use data=synthetic or data=llava.")
