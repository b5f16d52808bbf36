"""(b) Training throughput with and without each optimisation switch of conf/trainer/default.yaml.

Each comparison builds two identical tiny models (same seed), one per arm, and alternates their training
steps (A, B, B, A, ...) over the same batches, so load on this shared machine hits both alike. Throughput is
real LM tokens (text + image tokens, no padding) per second; the ratio is candidate / baseline.
"""
from __future__ import annotations

import time
import torch

from benchmarks.common import (batches_in_order, build_cell, lm_tokens, median, model_inputs, tiny_cfg,
                               train_step_fn)


def _image_tokens(cfg) -> int:
    from ablate.models.encoder import num_image_tokens

    return num_image_tokens(cfg.encoder, int(cfg.resolution))


def paired(step_a, step_b, batches_a: list, batches_b: list, tokens: int, warmup: int = 1) -> dict:
    """Alternate two training-step functions over their batch lists; tokens/s of each and the ratio b/a."""
    for k in range(warmup):
        step_a(batches_a[k % len(batches_a)])
        step_b(batches_b[k % len(batches_b)])
    ta, tb = [], []
    for k in range(len(batches_a)):
        order = ((step_a, batches_a, ta), (step_b, batches_b, tb))
        for fn, bs, acc in (order if k % 2 == 0 else order[::-1]):
            torch.manual_seed(k)     # both arms draw the same dropout masks: their losses are comparable
            t0 = time.perf_counter()
            fn(bs[k])
            acc.append(time.perf_counter() - t0)
    n = len(batches_a)
    a, b = tokens / (median(ta) * n), tokens / (median(tb) * n)
    return {"baseline_tokens_per_s": a, "candidate_tokens_per_s": b, "speedup": b / a,
            "baseline_s_per_step": median(ta), "candidate_s_per_step": median(tb), "steps": n}


def _switch(name: str, base_over: list[str], cand_over: list[str], stage: str, n: int, what: str) -> dict:
    """Two cells differing by one override; same seed, same batches."""
    a = build_cell(tiny_cfg(*base_over), stage)
    b = build_cell(tiny_cfg(*cand_over), stage)
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    res = paired(train_step_fn(a.vlm), train_step_fn(b.vlm), batches, batches, tokens)
    return {"name": name, "what": what, **res}


def labelled_logits(n: int, stage: str) -> dict:
    a = build_cell(tiny_cfg(), stage)
    b = build_cell(tiny_cfg(), stage)
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    res = paired(train_step_fn(a.vlm, labelled_logits_only=False), train_step_fn(b.vlm), batches, batches, tokens)
    return {"name": f"labelled_logits_only_{stage}", "what": f"{stage}, tiny cell: LM head at every position "
            "(baseline) vs only where a label is predicted (always on in training; no switch)", **res}


def attention(n: int) -> dict:
    return _switch("attn_sdpa_vs_eager", ["trainer.attn_implementation=eager"], ["trainer.attn_implementation=sdpa"],
                   "instruct", n, "stage 2, tiny cell: trainer.attn_implementation eager (baseline) vs sdpa")


def fused_gelu(n: int) -> dict:
    a = build_cell(tiny_cfg("trainer.fused_gelu=false"), "instruct")
    b = build_cell(tiny_cfg(), "instruct")
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    return {"name": "fused_gelu", "what": "stage 2, tiny cell: Phi-2's gelu_new (baseline) vs torch's fused tanh "
            "GELU (trainer.fused_gelu)", **paired(train_step_fn(a.vlm), train_step_fn(b.vlm), batches, batches, tokens)}


def saved_activation_bytes(vlm, batch) -> int:
    """Bytes autograd keeps for backward during one forward (the activation memory, device-independent)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = vlm(**model_inputs(batch)).loss
    loss.backward()
    vlm.zero_grad(set_to_none=True)
    return total


def checkpointing(n: int) -> dict:
    a = build_cell(tiny_cfg(), "instruct")
    b = build_cell(tiny_cfg("trainer.gradient_checkpointing=true"), "instruct")
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    mem_a, mem_b = saved_activation_bytes(a.vlm, batches[0]), saved_activation_bytes(b.vlm, batches[0])
    res = paired(train_step_fn(a.vlm), train_step_fn(b.vlm), batches, batches, tokens)
    return {"name": "gradient_checkpointing", "what": "stage 2, tiny cell: trainer.gradient_checkpointing false "
            "(baseline) vs true; memory = tensors saved for backward in one forward",
            **res, "baseline_saved_mb": mem_a / 2**20, "candidate_saved_mb": mem_b / 2**20,
            "memory_ratio": mem_b / mem_a}


def padding_fraction(batches: list, image_tokens: int) -> tuple[float, float]:
    """(text-level, LM-level) share of padded positions: LM-level counts image tokens as real positions."""
    real_text = sum(int(b["attention_mask"].sum()) for b in batches)
    slots_text = sum(b["attention_mask"].numel() for b in batches)
    real_lm = sum(lm_tokens(b, image_tokens) for b in batches)
    slots_lm = 0
    for b in batches:
        n_img = b["has_image"].long()                                 # (B,)
        per_row = b["attention_mask"].sum(1) + n_img * (image_tokens - 1)
        slots_lm += int(per_row.max()) * len(per_row)                 # the merged batch is padded to its longest
    return 1 - real_text / slots_text, 1 - real_lm / slots_lm


def length_grouping(n: int, stage: str = "instruct") -> dict:
    """The same samples (one mega-chunk of the sampler) batched in random order vs grouped by length."""
    a = build_cell(tiny_cfg(), stage)
    b = build_cell(tiny_cfg(), stage)
    base = batches_in_order(a, n, 16)
    # group the very same samples: the first n*16 of the random order, sorted by length within the chunk
    from ablate.train.sampler import ResumableSampler

    order = list(ResumableSampler(len(a.dataset), n * 16, 0))
    lengths = [a.dataset.lengths[i] for i in order]
    grouped_idx = [order[i] for i in sorted(range(len(order)), key=lambda i: -lengths[i])]
    grouped = [a.collator([a.dataset[i] for i in grouped_idx[k:k + 16]]) for k in range(0, len(grouped_idx), 16)]
    l_img = _image_tokens(a.cfg)
    tokens = sum(lm_tokens(x, l_img) for x in base)
    assert tokens == sum(lm_tokens(x, l_img) for x in grouped)
    pad_a, pad_b = padding_fraction(base, l_img), padding_fraction(grouped, l_img)
    # a long run, with the sampler's real mega-chunks: the padding a whole stage sees
    long_a = batches_in_order(a, 60, 16)
    long_b = batches_in_order(a, 60, 16, length_grouping=True)
    res = paired(train_step_fn(a.vlm), train_step_fn(b.vlm), base, grouped, tokens)
    return {"name": f"length_grouping_{stage}", "what": f"{stage}, tiny cell, the same {n * 16} samples in "
            "random batches (baseline) vs grouped by length (trainer.length_grouping)",
            **res, "padding_text_baseline": pad_a[0], "padding_text_grouped": pad_b[0],
            "padding_lm_baseline": pad_a[1], "padding_lm_grouped": pad_b[1],
            "padding_lm_60_steps_baseline": padding_fraction(long_a, l_img)[1],
            "padding_lm_60_steps_grouped": padding_fraction(long_b, l_img)[1]}


class _Head:
    """The first n samples of a LlavaDataset, with the interface the feature cache reads."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n
        self.lengths = dataset.lengths[:n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]

    def text_sample(self, i: int) -> dict:
        return self.dataset.text_sample(i)

    def image_path(self, i: int):
        return self.dataset.image_path(i)

    def pixel_values(self, i: int):
        return self.dataset.pixel_values(i)


def feature_cache(n: int) -> dict:
    """Stage 1 end to end (sample loading + collation + step, as with num_workers=0) with and without the cache."""
    import tempfile

    from ablate.train.feature_cache import use_feature_cache

    with tempfile.TemporaryDirectory() as tmp:
        a = build_cell(tiny_cfg(), "align")
        b = build_cell(tiny_cfg(), "align")
        b.cfg.paths.root = tmp
        head = _Head(b.dataset, n * 16)        # cache only the images the benchmark reads
        t0 = time.perf_counter()
        ds_b, col_b = use_feature_cache(b.vlm, b.cfg, head, b.collator, device="cpu", bf16=False)
        build_s = time.perf_counter() - t0
        n_images = len(ds_b.rows)
        idx = list(range(n * 16))
        step_a, step_b = train_step_fn(a.vlm), train_step_fn(b.vlm)
        load_a = lambda k: a.collator([a.dataset[i] for i in idx[k * 16:(k + 1) * 16]])   # noqa: E731
        load_b = lambda k: col_b([ds_b[i] for i in idx[k * 16:(k + 1) * 16]])             # noqa: E731
        losses = {"a": [], "b": []}
        run_a = lambda k: losses["a"].append(float(step_a(load_a(k))))                    # noqa: E731
        run_b = lambda k: losses["b"].append(float(step_b(load_b(k))))                    # noqa: E731
        ks = list(range(n))
        tokens = sum(lm_tokens(load_a(k), _image_tokens(a.cfg)) for k in ks)
        res = paired(run_a, run_b, ks, ks, tokens, warmup=0)
    return {"name": "feature_cache_stage1", "what": "stage 1 (projector only, frozen encoder), tiny cell: "
            "loading + step from images (baseline) vs from cached encoder features (trainer.feature_cache)",
            **res, "cache_build_s": build_s, "cache_images": n_images,
            "cache_build_s_per_image": build_s / max(1, n_images),
            "max_abs_loss_diff": max(abs(x - y) for x, y in zip(losses["a"], losses["b"]))}


def compile_(n: int) -> dict:
    from ablate.train.stage import compiled

    a = build_cell(tiny_cfg(), "instruct")
    b = build_cell(tiny_cfg(), "instruct")
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    step_a, step_b = train_step_fn(a.vlm), train_step_fn(b.vlm)
    with compiled(b.vlm, True):
        t0 = time.perf_counter()
        step_b(batches[0])           # compiles forward and backward
        first = time.perf_counter() - t0
        res = paired(step_a, step_b, batches, batches, tokens)
    return {"name": "compile", "what": "stage 2, tiny cell: eager (baseline) vs trainer.compile (torch.compile of "
            "encoder and LM)", **res, "first_step_s_incl_compile": first}


def bf16_cpu(n: int) -> dict:
    """bf16 autocast on this CPU (on GPU bf16-mixed is the default; see benchmarks/gpu_mfu.py)."""
    a = build_cell(tiny_cfg(), "instruct")
    b = build_cell(tiny_cfg(), "instruct")
    batches = batches_in_order(a, n, 16)
    tokens = sum(lm_tokens(x, _image_tokens(a.cfg)) for x in batches)
    step_b_raw = train_step_fn(b.vlm)

    def step_b(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return step_b_raw(batch)

    return {"name": "bf16_mixed_cpu", "what": "stage 2, tiny cell on this CPU: fp32 (baseline) vs bf16 autocast",
            **paired(train_step_fn(a.vlm), step_b, batches, batches, tokens)}

