"""Image loading and preprocessing: LLaVA-1.5's "pad" mode (pad to square with the mean colour), resize, normalise."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ablate.data import DataError


def load_image(path: str | os.PathLike, record: str | None = None) -> Image.Image:
    """The image at ``path`` as RGB; a DataError naming the file (and record) when it is missing or corrupt."""
    where = f" (record {record})" if record is not None else ""
    try:
        with Image.open(path) as im:
            im.load()   # decode now: a truncated file fails here, not later inside a collate worker
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image {path}{where} does not exist. Fix: check the image folder "
                        f"(data.image_folder / data.align_image_folder) or remove the record.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image {path}{where} is corrupt or not an image ({type(e).__name__}: {e}). "
                        f"Fix: re-download the file or remove the record.") from None


def expand_to_square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad the short side symmetrically with ``background`` so nothing is cropped away (LLaVA-1.5 "pad")."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def mean_color(image_mean) -> tuple[int, int, int]:
    """The encoder's normalisation mean as an 8-bit RGB colour: padding with it gives zeros after normalising."""
    return tuple(int(round(float(m) * 255)) for m in image_mean)


def to_pixel_values(img: Image.Image, resolution: int, image_mean, image_std) -> torch.Tensor:
    """(3, resolution, resolution) float32: padded to square, resized (bicubic, antialiased), normalised."""
    img = expand_to_square(img, mean_color(image_mean))
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)   # (3, R, R)
    mean = torch.tensor([float(m) for m in image_mean]).view(3, 1, 1)
    std = torch.tensor([float(s) for s in image_std]).view(3, 1, 1)
    return (x - mean) / std


def preprocess_image(path, resolution: int, image_mean, image_std, record: str | None = None) -> torch.Tensor:
    """load_image + to_pixel_values. `path` may also be an already decoded image (MMBench-style TSVs carry them)."""
    img = path.convert("RGB") if isinstance(path, Image.Image) else load_image(path, record)
    return to_pixel_values(img, resolution, image_mean, image_std)
