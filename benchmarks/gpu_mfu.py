"""GPU benchmark: tokens/s and model FLOPs utilisation of the full-size paper cell, stage 1 and stage 2.

SigLIP so400m at 384 px + 2-layer MLP + Phi-2 2.7B, built at full size with random weights (scale=full_random, no
download), bf16 autocast over fp32 master weights, SDPA (flash) attention, fused AdamW, gradient clipping, one
fixed random batch of equal-length samples (no padding): what ablate's training step runs, in a plain loop.
Stage 1 trains the projector (encoder and LM frozen); stage 2 trains everything (freeze=train_both, full).

MFU = model FLOPs per step (ablate.train.flops.step_flops, checked against torch's FlopCounterMode on one
step) x steps / seconds / peak dense bf16 FLOP/s of the GPU (by name: H100/H200 SXM 989e12, H100 PCIe 756e12,
A100 312e12; or --peak-tflops). Prints one JSON summary (and writes it to --out).

    python -m benchmarks.gpu_mfu                  # full size, on the GPU, about 3 minutes
    python -m benchmarks.gpu_mfu --tiny           # tiny models on CPU: tests the script and the FLOPs count
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time

# Before CUDA starts: retrying a smaller micro-batch after running out of memory needs unfragmented memory.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12)]


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16:
        if key.lower() in name.lower():
            return value
    return None


class StandInTokenizer:
    """What build_vlm reads from a tokenizer, for `vocab` ids; <image> is the last id (no download needed)."""
    padding_side = "right"
    pad_token_id, unk_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab - 1 if token == "<image>" else self.unk_token_id


def compose(tiny: bool):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ablate.config import CONF_DIR

    ov = ["encoder=siglip", "lm=phi2", "freeze=train_both", "tuning=full"]
    # tiny: eager attention, so torch's FlopCounterMode sees the attention matmuls on CPU too
    ov += (["scale=tiny", "resolution=224", "trainer.attn_implementation=eager"] if tiny else
           ["scale=full_random", "resolution=384", "trainer.attn_implementation=sdpa"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=ov)


def build(cfg, device: str, tiny: bool):
    from ablate.models.build import build_vlm

    vocab = 512 if tiny else int(cfg.lm.arch.vocab_size)
    tok = StandInTokenizer(vocab)
    try:
        with torch.device(device):           # initialise on the GPU: 3B parameters on the CPU take minutes
            vlm = build_vlm(cfg, tok)
    except Exception as e:  # noqa: BLE001 - fall back to building on the CPU and moving
        print(f"building on {device} failed ({type(e).__name__}: {e}); building on the CPU", file=sys.stderr)
        vlm = build_vlm(cfg, tok).to(device)
    if cfg.trainer.get("fused_gelu", True):      # as run_stage does before training
        from ablate.train.fused import fuse_gelu

        fuse_gelu(vlm)
    return vlm, tok


def make_batch(vlm, tok, cfg, stage: str, micro: int, text_len: int, device: str) -> dict:
    """`micro` samples of <image> + text_len random tokens; labels on the caption (stage 1) or on the last
    three quarters of the text (stage 2: answers after a prompt)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, tok.vocab - 1, (micro, 1 + text_len), generator=g)
    ids[:, 0] = vlm.image_token_id
    labels = ids.clone()
    labels[:, 0] = -100
    if stage == "instruct":
        labels[:, 1:1 + text_len // 4] = -100
    res = int(cfg.resolution)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "pixel_values": torch.randn(micro, 3, res, res, generator=g).to(device)}


def flops_of(vlm, batch: dict, cfg) -> dict:
    """step_flops of one micro-step at the batch's shape (the accounting rows use: ablate.train.flops.StepFlops)."""
    from ablate.train.flops import StepFlops, step_flops

    shape = StepFlops(vlm, cfg).shape(batch)
    return step_flops(vlm, **shape), shape["lm_seq"]


def counted_flops(vlm, batch: dict, amp) -> float:
    """FLOPs torch's FlopCounterMode sees in one forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with amp():
            loss = vlm(**batch, labelled_logits_only=True).loss
        loss.backward()
    vlm.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run_phase(vlm, tok, cfg, stage: str, *, micro: int, text_len: int, steps: int, warmup: int, device: str,
              amp, peak: float | None, accumulate: int = 1, compile_: bool = False, check_flops: bool = True
              ) -> dict:
    """`steps` timed optimizer steps, each of `accumulate` micro-batches (as plan_steps accumulates to reach
    the global batch on one GPU: the optimizer's pass over 3B fp32 parameters is paid once per step)."""
    from ablate.models.adapt import configure_stage
    from ablate.train.stage import compiled

    vlm = configure_stage(vlm, stage, cfg)
    vlm.train()
    batch = make_batch(vlm, tok, cfg, stage, micro, text_len, device)
    flops, lm_seq = flops_of(vlm, batch, cfg)
    out = {"stage": stage, "micro_batch": micro, "accumulate": accumulate, "lm_seq": lm_seq, "text_len": text_len,
           "compile": compile_, "precision": getattr(amp, "precision", "bf16 autocast"),
           "trainable_params": sum(p.numel() for p in vlm.parameters() if p.requires_grad),
           "model_flops_per_micro_step": flops["total"], "flops_breakdown": flops}
    if check_flops:
        counted = counted_flops(vlm, batch, amp)
        out["flop_counter_ratio"] = counted / flops["total"]      # 1.0 when the accounting is right
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, **({"fused": True} if device == "cuda" else {}))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        for _ in range(accumulate):
            with amp():
                loss = vlm(**batch, labelled_logits_only=True).loss / accumulate
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with compiled(vlm, compile_):
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        out["warmup_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = [step() for _ in range(steps)]
        sync()
        dt = (time.perf_counter() - t0) / steps
    per_step = flops["total"] * accumulate
    out.update(step_s=dt, samples_per_s=micro * accumulate / dt, tokens_per_s=micro * accumulate * lm_seq / dt,
               achieved_tflops=per_step / dt / 1e12, loss_finite=all(math.isfinite(float(x)) for x in losses))
    out["mfu"] = per_step / dt / peak if peak else None
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run_with_fallback(micros: list[int], **kw) -> dict:
    """Try micro-batch sizes in turn: the first that fits in memory is measured."""
    last = None
    for m in micros:
        try:
            return run_phase(micro=m, **kw)
        except torch.OutOfMemoryError as e:
            last = str(e).splitlines()[0]      # not the exception: its traceback holds the step's tensors
            print(f"{kw['stage']}: micro-batch {m} ran out of memory; trying a smaller one", file=sys.stderr)
        gc.collect()
        torch.cuda.empty_cache()
    return {"stage": kw["stage"], "error": f"out of memory at every micro-batch {micros}: {last}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_mfu", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models (runs on CPU; for tests)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per phase (default 10, tiny 2)")
    ap.add_argument("--stage1-micro", type=int, nargs="+", default=None, help="micro-batch sizes to try, stage 1")
    ap.add_argument("--stage2-micro", type=int, nargs="+", default=None, help="micro-batch sizes to try, stage 2")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run of stage 2")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 run of stage 1 (bf16's baseline)")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (both stages; "
                    "flop_counter_ratio then includes the recomputed forward)")
    ap.add_argument("--accumulate", type=int, default=None, help="micro-batches per optimizer step (default 8, "
                    "tiny 1; the paper's stage-2 batch of 128 on one GPU would be 32 at micro-batch 4)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by name)")
    ap.add_argument("--budget-s", type=float, default=270, help="skip optional phases past this many seconds")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny
    steps = args.steps or (2 if tiny else 4)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(name) if device == "cuda" else None)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def amp():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    amp.precision = "bf16 autocast" if device == "cuda" else "fp32 (cpu)"

    cfg = compose(tiny)
    if args.checkpointing:
        cfg.trainer.gradient_checkpointing = True
    t0 = time.perf_counter()
    vlm, tok = build(cfg, device, tiny)
    summary = {"device": name, "peak_flops": peak, "torch": torch.__version__, "tiny": tiny,
               "model": f"{cfg.encoder.name} @ {cfg.resolution}px + {cfg.lm.name} ({cfg.scale.name})",
               "params": sum(p.numel() for p in vlm.parameters()), "build_s": time.perf_counter() - t0,
               "attn_implementation": cfg.trainer.attn_implementation, "precision": "bf16 autocast" if device ==
               "cuda" else "fp32", "gradient_checkpointing": bool(args.checkpointing), "phases": []}
    common = dict(vlm=vlm, tok=tok, cfg=cfg, steps=steps, warmup=1, device=device, amp=amp,
                  peak=peak, accumulate=args.accumulate or (1 if tiny else 8))
    s1 = args.stage1_micro or ([2] if tiny else [32, 16, 8])
    s2 = args.stage2_micro or ([2] if tiny else [8, 4, 2, 1])

    def write() -> str:
        ok = [p for p in summary["phases"] if p.get("stage") == "instruct" and p.get("mfu") is not None]
        summary["stage2_best_mfu"] = max((p["mfu"] for p in ok), default=None)
        s1 = {p.get("precision"): p for p in summary["phases"] if p.get("stage") == "align" and "tokens_per_s" in p}
        if {"bf16 autocast", "fp32 (tf32 matmuls)"} <= set(s1):
            bf16, f32 = s1["bf16 autocast"], s1["fp32 (tf32 matmuls)"]
            summary["stage1_bf16_over_fp32_tokens_per_s"] = bf16["tokens_per_s"] / f32["tokens_per_s"]
        summary["wall_s"] = time.perf_counter() - t_start
        text = json.dumps(summary, indent=1, default=str)
        if args.out:                          # after every phase: a run cut short still leaves its numbers
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                f.write(text)
        return text

    def phase(micros: list[int], **kw) -> dict:
        try:
            p = run_with_fallback(micros, **{**common, **kw})
        except Exception as e:  # noqa: BLE001 - one failed phase must not lose the others' numbers
            p = {"stage": kw["stage"], "compile": kw.get("compile_", False), "error": f"{type(e).__name__}: {e}"}
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        summary["phases"].append(p)
        print(f"[{time.perf_counter() - t_start:.0f} s] {p['stage']} compile={p.get('compile')}: "
              f"{p.get('error') or 'mfu=%s tokens/s=%.0f' % (p.get('mfu'), p.get('tokens_per_s', 0))}",
              file=sys.stderr, flush=True)
        write()
        return p

    def fp32():                               # the baseline of bf16 mixed precision: fp32 weights, TF32 matmuls
        return contextlib.nullcontext()
    fp32.precision = "fp32 (tf32 matmuls)"

    # text lengths like LCS-558K captions (stage 1) and LLaVA-665K conversations (stage 2)
    p1 = phase(s1, stage="align", text_len=32)
    p2 = phase(s2, stage="instruct", text_len=128)
    if "error" not in p1 and not args.no_fp32:
        phase([p1["micro_batch"], max(1, p1["micro_batch"] // 2)], stage="align", text_len=32, amp=fp32, check_flops=False,
              steps=min(steps, 2))
    if not args.no_compile and "error" not in p2:
        if time.perf_counter() - t_start < args.budget_s * 0.5:
            phase([p2["micro_batch"]], stage="instruct", text_len=128, compile_=True, check_flops=False)
        else:
            summary["phases"].append({"stage": "instruct", "compile": True, "skipped": "past half the budget"})
    print(write())
    return 0 if all("error" not in p for p in summary["phases"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
