"""(c) Evaluation throughput: batched KV-cache generation (batch 16) against one question at a time.

The tiny cell's model (untrained) answers the same held-out synthetic questions through
ablate.eval.generate.generate_answers, in runs that alternate between batch 16 and batch 1, at the synthetic
eval's max_new_tokens and at a longer 32. Answers must not depend on the batch size: reported. A breakdown of
one batch of 16 (image preprocessing, encoder + merge, LM prefill, decoding) shows where the time goes.
"""
from __future__ import annotations

import time

import torch

from benchmarks.common import build_cell, median, tiny_cfg


def _breakdown(vlm, tokenizer, template, requests, load_image) -> dict:
    """Seconds per stage of one batch of 16 questions (greedy, no early stop)."""
    from transformers import GenerationConfig

    ids = [template.encode_prompt(r.text, tokenizer, image=True) for r in requests]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):                      # left padding, as generate_answers
        input_ids[row, width - len(x):], mask[row, width - len(x):] = torch.tensor(x), 1
    out: dict[str, float] = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        pixels = torch.stack([load_image(r.image) for r in requests])
        t1 = time.perf_counter()
        m = vlm.merge(input_ids, mask, vlm.image_embeddings(input_ids, pixels), padding_side="left")
        t2 = time.perf_counter()
        vlm.lm_model(inputs_embeds=m.inputs_embeds, attention_mask=m.attention_mask, position_ids=m.position_ids)
        t3 = time.perf_counter()
        gen = GenerationConfig(max_new_tokens=8, do_sample=False, use_cache=True, eos_token_id=-1,
                               pad_token_id=tokenizer.pad_token_id)
        vlm.lm_model.generate(inputs_embeds=m.inputs_embeds, attention_mask=m.attention_mask, generation_config=gen)
        t4 = time.perf_counter()
    out = {"image_preprocess_s": t1 - t0, "encoder_merge_s": t2 - t1, "lm_prefill_s": t3 - t2,
           "lm_decode_8_tokens_s": max(0.0, (t4 - t3) - (t3 - t2))}
    return out


def run(quick: bool = False) -> dict:
    from ablate.data import resolve_data
    from ablate.data.conversation import get_template
    from ablate.data.image import preprocess_image
    from ablate.eval.generate import Request, generate_answers
    from ablate.eval.run import exact_match_questions

    n_q, repeats = (16, 1) if quick else (32, 2)
    cfg = tiny_cfg()
    cell = build_cell(cfg, "instruct")
    vlm = cell.vlm.eval()
    questions = exact_match_questions(resolve_data(cfg)["eval_json"])[:n_q]
    requests = [Request(q.question_id, q.prompt, q.image) for q in questions]
    template = get_template(cfg.lm.template)
    res, mean, std = int(cfg.resolution), list(cfg.encoder.image_mean), list(cfg.encoder.image_std)

    def load_image(path):
        return preprocess_image(path, res, mean, std)

    out = {"name": "generation_batched_vs_single", "target": ">= 5 (questions/s, batch 16 / batch 1)"}
    for max_new in (int(cfg.eval.max_new_tokens), 32):
        reqs = requests if max_new == int(cfg.eval.max_new_tokens) else requests[:16]
        times: dict[int, list[float]] = {16: [], 1: []}
        answers: dict[int, dict] = {}
        generate_answers(vlm, cell.tokenizer, template, reqs[:2], load_image, batch_size=2, max_new_tokens=2)
        for r in range(repeats):
            for bs in ((16, 1) if r % 2 == 0 else (1, 16)):
                t0 = time.perf_counter()
                answers[bs] = generate_answers(vlm, cell.tokenizer, template, reqs, load_image, batch_size=bs,
                                               max_new_tokens=max_new)
                times[bs].append(time.perf_counter() - t0)
        qps = {bs: len(reqs) / median(t) for bs, t in times.items()}
        out[f"max_new_{max_new}"] = {"questions": len(reqs), "questions_per_s_batch1": qps[1],
                                     "questions_per_s_batch16": qps[16], "ratio": qps[16] / qps[1],
                                     "answers_identical": answers[1] == answers[16]}
    out["ratio"] = out[f"max_new_{int(cfg.eval.max_new_tokens)}"]["ratio"]
    out["batch16_breakdown_s"] = _breakdown(vlm, cell.tokenizer, template, requests[:16], load_image)
    out["what"] = ("tiny cell, synthetic eval questions, greedy with KV cache and left padding: questions/s at "
                   f"batch 16 vs batch 1, at max_new_tokens={int(cfg.eval.max_new_tokens)} (the synthetic eval) "
                   "and 32")
    return out
