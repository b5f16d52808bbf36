"""benchmarks/gpu_mfu.py at tiny size on the CPU: it runs end to end, and its FLOPs accounting is right.

The accounting (ablate.train.flops.step_flops) is checked against torch's FlopCounterMode on one real
forward + backward of each stage (eager attention, so the counter sees the attention matmuls on a CPU).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, compose

if str(REPO) not in sys.path:       # `benchmarks` lives at the repo root, beside src/
    sys.path.insert(0, str(REPO))

TOL = 1e-3       # relative: the count is exact up to ops the counter sees that are not model FLOPs


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_mfu") / "summary.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_mfu", "--tiny", "--steps", "1", "--no-compile",
           "--peak-tflops", "1.0", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed == json.loads(out.read_text())
    return printed


def test_runs_both_stages_and_reports_throughput(summary):
    stages = [(p["stage"], p["precision"]) for p in summary["phases"]]
    assert stages == [("align", "fp32 (cpu)"), ("instruct", "fp32 (cpu)"), ("align", "fp32 (tf32 matmuls)")]
    for p in summary["phases"]:
        assert "error" not in p and p["loss_finite"]
        assert p["tokens_per_s"] > 0 and p["step_s"] > 0
        per_step = p["model_flops_per_micro_step"] * p["accumulate"]
        assert p["achieved_tflops"] == pytest.approx(per_step / p["step_s"] / 1e12)
        assert p["mfu"] == pytest.approx(p["achieved_tflops"] / 1.0)     # --peak-tflops 1.0
    s1, s2, _ = summary["phases"]
    assert s1["trainable_params"] < s2["trainable_params"]              # projector only, then everything
    assert s1["flops_breakdown"]["encoder_backward"] == 0               # frozen encoder: no backward
    assert s2["flops_breakdown"]["encoder_backward"] > 0


def test_flops_accounting_matches_torch_flop_counter(summary):
    for p in summary["phases"][:2]:
        assert p["flop_counter_ratio"] == pytest.approx(1.0, rel=TOL), p["stage"]


def test_step_flops_by_hand():
    """The rules on the tiny VLM in stage 1: LM input grads only, the projector's fc2 input grad and its
    weight grads, nothing for the frozen encoder."""
    from benchmarks.gpu_mfu import StandInTokenizer

    from ablate.models.adapt import configure_stage
    from ablate.models.build import build_vlm
    from ablate.train.flops import step_flops

    cfg = compose(["scale=tiny", "resolution=224", "trainer.attn_implementation=eager"])
    vlm = configure_stage(build_vlm(cfg, StandInTokenizer(64)), "align", cfg)
    B, T, L_img = 2, 300, 256
    f = step_flops(vlm, batch=B, images=B, lm_seq=T, encoder_seq=L_img, image_tokens=L_img)
    fc1, fc2 = vlm.projector.fc1.weight.numel(), vlm.projector.fc2.weight.numel()
    pos = B * L_img
    assert f["projector_forward"] == 2 * (fc1 + fc2) * pos
    assert f["projector_backward"] == 2 * fc2 * pos + 2 * (fc1 + fc2) * pos
    lm_mat = sum(m.weight.numel() for m in vlm.lm_model.modules() if isinstance(m, torch.nn.Linear))
    attn = 4 * T * T * vlm.lm_model.config.hidden_size * vlm.lm_model.config.num_hidden_layers * B
    assert f["lm_forward"] == 2 * lm_mat * B * T + attn
    assert f["lm_backward"] == 2 * lm_mat * B * T + 2 * attn      # input grads only: the LM is frozen
    assert f["encoder_backward"] == 0


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                       ("Tesla T4", None)])
def test_peak_by_gpu_name(name, peak):
    from benchmarks.gpu_mfu import peak_flops

    assert peak_flops(name) == peak


@pytest.mark.parametrize("stage,tuning", [("align", "full"), ("instruct", "full"), ("instruct", "lora")])
def test_row_flops_are_step_flops_of_the_real_batches(stage, tuning, tmp_path):
    """The FLOPs a row stores (StepFlops over each training batch) equal step_flops at that batch's shapes, and
    FlopCounterMode's count of the real forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.data import resolve_data
    from ablate.data.collate import Collator
    from ablate.data.tokenizer import build_tokenizer
    from ablate.models.adapt import configure_stage
    from ablate.models.build import build_vlm
    from ablate.run import _dataset
    from ablate.data.conversation import get_template
    from ablate.train.flops import StepFlops, step_flops

    cfg = compose(["resolution=224", f"tuning={tuning}", "trainer.attn_implementation=eager", "data.num_train=8",
                   "data.num_eval=2", "lm.arch.resid_pdrop=0.0"], root=tmp_path)
    data = resolve_data(cfg)
    tok = build_tokenizer(cfg)
    vlm = build_vlm(cfg, tok)
    configure_stage(vlm, "align", cfg)
    vlm = configure_stage(vlm, stage, cfg) if stage == "instruct" else vlm
    template = get_template("plain" if stage == "align" else cfg.lm.template)
    ds = _dataset(cfg, data["align_json" if stage == "align" else "instruct_json"], data["image_folder"], tok,
                  template, stage)
    batch = Collator(tok.pad_token_id, "right")([ds[i] for i in range(4)])
    counted = StepFlops(vlm, cfg)(batch)
    l_img = 256
    merged = int((batch["attention_mask"].sum(1) + l_img - 1).max())
    keep = int((batch["labels"][:, 1:] != -100).any(0).sum())
    direct = step_flops(vlm, batch=4, images=4, lm_seq=merged, encoder_seq=l_img, image_tokens=l_img,
                        logit_positions=4 * keep)["total"]
    assert counted == pytest.approx(direct, rel=1e-9)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    with FlopCounterMode(display=False) as fc:
        vlm(**inputs, labelled_logits_only=True).loss.backward()
    assert fc.get_total_flops() == pytest.approx(counted, rel=TOL)
    # a batch of cached encoder features (stage 1's feature cache) costs no encoder FLOPs
    cached = StepFlops(vlm, cfg)({**batch, "image_features": torch.zeros(4, l_img, 64)})
    enc = step_flops(vlm, batch=0, images=4, lm_seq=0, encoder_seq=l_img, image_tokens=0, logit_positions=0)
    assert counted - cached == pytest.approx(enc["encoder_forward"] + enc["encoder_backward"], rel=1e-9)
