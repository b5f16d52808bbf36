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
                     batch_size: int = 16, max_new_tokens: int = 16, progress: bool = False) -> dict[str, str]:
    """Map question id -> decoded answer (stripped). Prompts are left-padded so every row's next token
    sits at the last position; the VLM masks the padding, so a row's answer is the same in any batch."""
    vlm.eval()
    device = next(vlm.parameters()).device
    stop_ids = sorted({template.eot_id(tokenizer), tokenizer.eos_token_id} - {None})
    answers: dict[str, str] = {}
    # Sort by prompt length so batches carry little padding; the result is keyed by id, order-free.
    order = sorted(range(len(requests)), key=lambda i: len(requests[i].text))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    it = batches
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(batches, desc="generate", unit="batch", leave=False)
    # Images are decoded and resized in threads (PIL releases the GIL), the next batch's while the model
    # generates this one's: on a GPU, one thread's preprocessing would take longer than the generation.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))

    def submit(k: int) -> list:
        return [pool.submit(load_image, requests[i].image) for i in batches[k] if requests[i].image is not None] \
            if k < len(batches) else []

    try:
        pending = submit(0)
        for k, idx in enumerate(it):
            futures, pending = pending, submit(k + 1)
            reqs = [requests[i] for i in idx]
            ids = [template.encode_prompt(r.text, tokenizer, image=r.image is not None) for r in reqs]
            width = max(len(x) for x in ids)
            pad = tokenizer.pad_token_id
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            attention = torch.zeros((len(ids), width), dtype=torch.long)
            for row, x in enumerate(ids):  # left padding
                input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                attention[row, width - len(x):] = 1
            images = [f.result() for f in futures]
            pixel_values = torch.stack(images).to(device) if images else None
            out = vlm.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                               pixel_values=pixel_values, max_new_tokens=max_new_tokens, eos_token_id=stop_ids)
            for r, seq in zip(reqs, out.tolist()):
                answers[r.question_id] = _decode(seq, stop_ids, pad, tokenizer)
    finally:
        pool.shutdown(cancel_futures=True)
    return answers


def _decode(seq: list[int], stop_ids: list[int], pad: int, tokenizer) -> str:
    cut = []
    for t in seq:
        if t in stop_ids:
            break
        cut.append(t)
    return tokenizer.decode(cut, skip_special_tokens=True).strip()
