"""Batched greedy generation with a KV cache and left padding; answers do not depend on the batch size."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class Request:
    """One question for the model: the user text (with `<image>` where the image goes) and its image."""
    question_id: str
    text: str
    image: object | None  # a path, a PIL image, or None for text-only


@torch.inference_mode()
def generate_answers(vlm, tokenizer, template, requests: Sequence[Request], load_image: Callable,
                     batch_size: int = 16, max_new_tokens: int = 16, progress: bool = False,
                     share_prefix: bool = True) -> dict[str, str]:
    """Map question id -> decoded answer (stripped). Prompts are left-padded so every row's next token
    sits at the last position; the VLM masks the padding, so a row's answer is the same in any batch.
    With `share_prefix`, questions about the same image share its prefix (see below); without, every question
    runs its whole prompt. Both give the same answers (tested)."""
    vlm.eval()
    device = next(vlm.parameters()).device
    stop_ids = sorted({template.eot_id(tokenizer), tokenizer.eos_token_id} - {None})
    image_id = vlm.image_token_id
    answers: dict[str, str] = {}
    # Questions about the same image go in the same batch, where they share the image's prefix (system text +
    # image tokens: one encoder and LM pass per distinct image, VLM.generate_shared_prefix); within an image,
    # and for text-only questions, by prompt length so batches carry little padding. The result is keyed by
    # id, so the order is free.
    keys = [_image_key(r.image) for r in requests]
    order = sorted(range(len(requests)), key=lambda i: (keys[i] is None, keys[i] or "", len(requests[i].text)))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    it = batches
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(batches, desc="generate", unit="batch", leave=False)
    # Images are decoded and resized in threads (PIL releases the GIL), the next batch's while the model
    # generates this one's: on a GPU, one thread's preprocessing would take longer than the generation.
    # Each distinct image of a batch is loaded once.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))

    def distinct(idx: list[int]) -> list[int]:
        firsts: dict = {}
        for i in idx:
            if keys[i] is not None:
                firsts.setdefault(keys[i], i)
        return list(firsts.values())

    def submit(k: int) -> dict:
        return {keys[i]: pool.submit(load_image, requests[i].image) for i in distinct(batches[k])} \
            if k < len(batches) else {}

    try:
        pending = submit(0)
        for k, idx in enumerate(it):
            # this batch's images first, then the next batch's loads: an image object shared by both batches
            # (the same in-memory image) is never decoded by two threads at once
            images = {key: f.result() for key, f in pending.items()}
            pending = submit(k + 1)
            reqs = [requests[i] for i in idx]
            ids = [template.encode_prompt(r.text, tokenizer, image=r.image is not None) for r in reqs]
            split = _shared_prefix(ids, image_id) if share_prefix else None
            if split is not None:
                slot = {key: n for n, key in enumerate(images)}
                pixel_values = torch.stack(list(images.values())).to(device)
                out = vlm.generate_shared_prefix(split[0], split[1], [slot[keys[i]] for i in idx],
                                                 pixel_values=pixel_values, max_new_tokens=max_new_tokens,
                                                 eos_token_id=stop_ids)
            else:  # text-only rows, or prompts whose text before the image differs: left-padded full prompts
                width = max(len(x) for x in ids)
                pad = tokenizer.pad_token_id
                input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
                attention = torch.zeros((len(ids), width), dtype=torch.long)
                for row, x in enumerate(ids):  # left padding
                    input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                    attention[row, width - len(x):] = 1
                per_row = [images[keys[i]] for i in idx if keys[i] is not None]
                pixel_values = torch.stack(per_row).to(device) if per_row else None
                out = vlm.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                   pixel_values=pixel_values, max_new_tokens=max_new_tokens, eos_token_id=stop_ids)
            for r, seq in zip(reqs, out.tolist()):
                answers[r.question_id] = _decode(seq, stop_ids, tokenizer.pad_token_id, tokenizer)
    finally:
        pool.shutdown(cancel_futures=True)
    return answers


def _image_key(image) -> str | None:
    """Requests with equal keys show the same image: a path by its text, an in-memory image by identity."""
    if image is None:
        return None
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<object {id(image)}>"


def _shared_prefix(ids: list[list[int]], image_id: int) -> tuple[list[int], list[list[int]]] | None:
    """(prefix, suffixes) when every prompt holds exactly one image placeholder after the same prefix and
    something after it; None otherwise (the caller then runs full prompts)."""
    prefix, suffixes = None, []
    for x in ids:
        if x.count(image_id) != 1:
            return None
        p = x.index(image_id)
        if prefix is None:
            prefix = x[:p]
        elif x[:p] != prefix:
            return None
        if p == len(x) - 1:
            return None
        suffixes.append(x[p + 1:])
    return prefix, suffixes


def _decode(seq: list[int], stop_ids: list[int], pad: int, tokenizer) -> str:
    cut = []
    for t in seq:
        if t in stop_ids:
            break
        cut.append(t)
    return tokenizer.decode(cut, skip_special_tokens=True).strip()
