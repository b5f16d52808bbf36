"""Opt-in cache of frozen-encoder features for stage 1 (`trainer.feature_cache`): each image is encoded once.

Stage 1 trains the projector only, so the encoder's output for an image never changes. Every cell that shares
the encoder (its config and its actual weights), resolution, preprocessing, feature layer and precision, and
the same images, reads the same cache, e.g. every LM of a sweep over the same encoder. Files:

    <paths.root>/features/<encoder key>/<images key>.npy    (N_images, L_img, D_v), memory-mapped
    <paths.root>/features/<encoder key>/<images key>.json   image paths in row order, and the key's contents

Storage dtype: float32 under 32-bit training; bfloat16 (raw bits in an int16 array) under bf16 mixed
precision, where the projector's first matmul casts its input to bf16 anyway, so both are exact. Size per
image: L_img x D_v x 4 (or 2) bytes (SigLIP so400m at 384 px in bf16: 729 x 1152 x 2 = 1.7 MB).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

# What ablate.data.image does to an image before the encoder; change it when that code changes.
PREPROCESS = "llava-1.5 pad-to-square(mean colour), bicubic antialiased resize, normalise; v1"


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of a module's parameters and buffers: random-init encoders differ by seed, so config is not enough."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encoder_key(vlm, cfg, storage: str) -> dict:
    from omegaconf import OmegaConf

    return {"encoder": OmegaConf.to_container(cfg.encoder, resolve=True), "weights": weights_digest(vlm.encoder),
            "resolution": int(cfg.resolution), "preprocess": PREPROCESS, "storage": storage,
            "attn_implementation": cfg.trainer.get("attn_implementation", "sdpa")}


def images_of(dataset) -> list[Path]:
    """The distinct image files of a LlavaDataset, in first-use order."""
    seen: dict[Path, None] = {}
    for i in range(len(dataset)):
        p = dataset.image_path(i)
        if p is not None:
            seen.setdefault(Path(p).resolve(), None)
    return list(seen)


def images_key(paths: list[Path]) -> str:
    """Paths with size and modification time: a replaced image file gets a new cache."""
    return _digest([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths])


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)   # cells building the same cache at once: one builds, the others wait
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Pixels(Dataset):
    def __init__(self, dataset, rows: list[int]):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.dataset.pixel_values(self.rows[k])


@torch.no_grad()
def build(vlm, dataset, paths: list[Path], out: Path, *, device: str, bf16: bool, batch_size: int = 64,
          num_workers: int = 0) -> None:
    """Encode every image once (eval mode, as a frozen encoder should run) into `out`, written atomically."""
    first = {}
    for i in range(len(dataset)):
        p = dataset.image_path(i)
        if p is not None:
            first.setdefault(Path(p).resolve(), i)
    rows = [first[p] for p in paths]
    enc = vlm.encoder
    was_training, home = enc.training, next(enc.parameters()).device
    enc.eval().to(device)
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else nullcontext()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    arr = None
    try:
        # its own generator: drawing the loader's seed from the global RNG would shift the dropout masks of
        # the training that follows, and the cached run would no longer match the uncached one
        loader = DataLoader(_Pixels(dataset, rows), batch_size=batch_size, num_workers=num_workers,
                            generator=torch.Generator())
        k = 0
        for pixels in loader:
            with amp:
                f = enc(pixels.to(device))                           # (b, L_img, D_v)
            f = f.to(torch.bfloat16).view(torch.int16) if bf16 else f.float()
            if arr is None:
                arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16 if bf16 else np.float32,
                                                shape=(len(rows), *f.shape[1:]))
            arr[k:k + len(f)] = f.cpu().numpy()
            k += len(f)
        arr.flush()
        del arr
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
        enc.to(home).train(was_training)


class CachedFeatures(Dataset):
    """A LlavaDataset whose samples carry `image_features` (L_img, D_v) from the cache instead of pixels."""

    def __init__(self, dataset, npy: Path, paths: list[Path], bf16: bool):
        self.dataset, self.npy, self.bf16 = dataset, npy, bf16
        row = {p: r for r, p in enumerate(paths)}
        self.rows = [None if dataset.image_path(i) is None else row[Path(dataset.image_path(i)).resolve()]
                     for i in range(len(dataset))]
        self._arr = None   # opened lazily: each DataLoader worker maps the file itself

    @property
    def lengths(self) -> list[int]:
        return self.dataset.lengths

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        if self._arr is None:
            self._arr = np.load(self.npy, mmap_mode="r")
        sample = self.dataset.text_sample(i)
        r = self.rows[i]
        if r is not None:
            f = torch.from_numpy(np.array(self._arr[r]))       # a copy: the map stays read-only
            sample["image_features"] = f.view(torch.bfloat16) if self.bf16 else f
        return sample


class FeatureCollator:
    """The stage's collator on the text, plus `image_features` (N_images, L_img, D_v) in row order."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, batch: list[dict]) -> dict:
        feats = [s["image_features"] for s in batch if "image_features" in s]
        empty = torch.empty(0)
        out = self.collator([{**s, "pixel_values": empty} for s in batch])
        out.pop("pixel_values")
        if feats:
            out["image_features"] = torch.stack(feats)
        return out


def use_feature_cache(vlm, cfg, dataset, collator, *, device: str, bf16: bool):
    """(dataset, collator) reading cached encoder features, building the cache first if needed.

    Only for a frozen encoder: with a trainable one the features change every step.
    """
    from ablate.train.stage import resolve_num_workers

    if any(p.requires_grad for p in vlm.encoder.parameters()):
        raise ValueError("trainer.feature_cache=true needs a frozen encoder (stage 1 freezes it); the encoder of "
                         "this stage trains, so its features change every step")
    storage = "bf16" if bf16 else "fp32"
    key = encoder_key(vlm, cfg, storage)
    folder = Path(str(cfg.paths.root)).expanduser() / "features" / _digest(key)
    paths = images_of(dataset)
    npy = folder / f"{images_key(paths)}.npy"
    with _lock(folder / ".lock"):
        if not npy.exists():
            log.info("feature cache: encoding %d images into %s", len(paths), npy)
            (folder / "key.json").write_text(json.dumps(key, indent=1, default=str))
            npy.with_suffix(".json").write_text(json.dumps([str(p) for p in paths]))
            build(vlm, dataset, paths, npy, device=device, bf16=bf16,
                  num_workers=resolve_num_workers(cfg))
        else:
            log.info("feature cache: reusing %s (%d images)", npy, len(paths))
    return CachedFeatures(dataset, npy, paths, bf16), FeatureCollator(collator)
