"""(c) Evaluation throughput: batched KV-cache generation (batch 16) against one question at a time.

The tiny cell's model (untrained) answers the same questions through ablate.eval.generate.generate_answers,
in runs that alternate between batch 1 and batch 16 (with and without prefix sharing): the held-out synthetic questions (2 per image) at the
synthetic eval's max_new_tokens and at a longer 32, and the POPE-style questions (several per image, as in
POPE, GQA, VQAv2 or MME) and MMBench-style questions (CircularEval's rotated copies of one image) at the eval's
max_new_tokens. At batch 16 the questions about one image share its
prefix (system text + image tokens: one encoder and LM pass per distinct image in the batch); at batch 1 every
question runs its whole prompt, as LLaVA's one-question loop does. Answers must not depend on the batch size:
reported. A breakdown of one batch of 16 full prompts (image preprocessing, encoder + merge, LM prefill,
decoding) shows where the time goes without sharing.
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
    from ablate.eval.generate import Request, _image_key, generate_answers
    from ablate.eval.run import _load, exact_match_questions

    n_q, repeats = (16, 1) if quick else (64, 2)   # 64: 4 batches, so the first batch's image loads do not dominate
    cfg = tiny_cfg()
    cell = build_cell(cfg, "instruct")
    vlm = cell.vlm.eval()
    data = resolve_data(cfg)
    questions = exact_match_questions(data["eval_json"])[:n_q]
    requests = [Request(q.question_id, q.prompt, q.image) for q in questions]
    pope = _load("synth_pope", cfg, data)[1][:n_q * 2]
    pope_requests = [Request(q.question_id, q.prompt, q.image) for q in pope]
    mmb = _load("synth_mmb", cfg, data)[1][:n_q * 2]        # CircularEval: 4 rotated copies per image
    mmb_requests = [Request(q.question_id, q.prompt, q.image) for q in mmb]
    template = get_template(cfg.lm.template)
    res, mean, std = int(cfg.resolution), list(cfg.encoder.image_mean), list(cfg.encoder.image_std)

    def load_image(image):   # a path, or a decoded image (MMBench's TSV)
        return preprocess_image(image, res, mean, std)

    out = {"name": "generation_batched_vs_single", "target": ">= 5 (questions/s, batch 16 / batch 1)"}
    short = int(cfg.eval.max_new_tokens)
    for label, max_new, reqs in ((f"max_new_{short}", short, requests), ("max_new_32", 32, requests[:16]),
                                 (f"pope_max_new_{short}", short, pope_requests),
                                 (f"mmb_max_new_{short}", short, mmb_requests)):
        arms = {"single": (1, False), "batched": (16, False), "shared": (16, True)}
        times: dict[str, list[float]] = {k: [] for k in arms}
        answers: dict[str, dict] = {}
        generate_answers(vlm, cell.tokenizer, template, reqs[:2], load_image, batch_size=2, max_new_tokens=2)
        for r in range(repeats):
            for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                bs, share = arms[arm]
                t0 = time.perf_counter()
                answers[arm] = generate_answers(vlm, cell.tokenizer, template, reqs, load_image, batch_size=bs,
                                                max_new_tokens=max_new, share_prefix=share)
                times[arm].append(time.perf_counter() - t0)
        qps = {arm: len(reqs) / median(t) for arm, t in times.items()}
        out[label] = {"questions": len(reqs), "images": len({_image_key(r.image) for r in reqs}),
                      "questions_per_s_batch1": qps["single"],
                      "questions_per_s_batch16_no_sharing": qps["batched"],
                      "questions_per_s_batch16": qps["shared"], "ratio": qps["shared"] / qps["single"],
                      "ratio_without_sharing": qps["batched"] / qps["single"],
                      "answers_identical": answers["single"] == answers["batched"] == answers["shared"]}
    out["ratio"] = out[f"max_new_{short}"]["ratio"]
    out["ratio_no_sharing"] = out[f"max_new_{short}"]["ratio_without_sharing"]
    out["ratio_32_tokens"] = out["max_new_32"]["ratio"]
    out["ratio_pope"] = out[f"pope_max_new_{short}"]["ratio"]
    out["ratio_pope_no_sharing"] = out[f"pope_max_new_{short}"]["ratio_without_sharing"]
    out["ratio_mmb"] = out[f"mmb_max_new_{short}"]["ratio"]
    out["ratio_mmb_no_sharing"] = out[f"mmb_max_new_{short}"]["ratio_without_sharing"]
    out["batch16_breakdown_s"] = _breakdown(vlm, cell.tokenizer, template, requests[:16], load_image)
    out["what"] = ("tiny cell, greedy with KV cache: questions/s at batch 16 (questions about one image share its "
                   "prefix) vs batch 1 (whole prompt per question); held-out synthetic questions at "
                   f"max_new_tokens={short} (the synthetic eval) and 32, POPE- and MMBench-style questions at {short}")
    return out
