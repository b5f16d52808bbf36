"""Each speed switch keeps a tiny cell's numbers: losses with and without it agree within a stated tolerance.

Tolerances (absolute, on losses of about 4-7):
  sdpa vs eager attention, gradient checkpointing, fused GELU,
  torch.compile:                                                  1e-4 (float rounding of another kernel order)
  feature cache, length-grouped batching of the same samples:     1e-5 (same math; padding and batch order)
  bf16 autocast on CPU vs fp32:                                   5e-2 (precision is part of the cell id)
Length grouping changes which samples share a batch, so a run's losses change: it is checked to keep each
sample's loss, and its sampler to stay deterministic, resumable and a permutation per epoch.
"""
from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import SMALL_DATA, compose

from ablate.train.sampler import ResumableSampler

TOL_KERNEL, TOL_EXACT, TOL_BF16 = 1e-4, 1e-5, 5e-2
CELL = ["resolution=224", "logger=none", "encoder=siglip", "lm=phi2", *SMALL_DATA,
        "scale.stage1.max_steps=3", "scale.stage1.batch_size=4", "scale.stage1.micro_batch_size=4",
        "scale.stage2.max_steps=3", "scale.stage2.batch_size=4", "scale.stage2.micro_batch_size=4"]


def _cfg(data_root, root, *extra):
    return compose([*CELL, f"paths.data_root={data_root}", *extra], root=root)


def _cell(cfg, stage: str):
    """(vlm with the stage's requires_grad, dataset, collator), built as run.py builds them, seed 0."""
    from ablate.data import resolve_data
    from ablate.data.collate import Collator
    from ablate.data.conversation import get_template
    from ablate.data.llava import LlavaDataset
    from ablate.data.tokenizer import build_tokenizer
    from ablate.models.adapt import configure_stage
    from ablate.models.build import build_vlm

    L.seed_everything(0, verbose=False)
    data, tok = resolve_data(cfg), build_tokenizer(cfg)
    vlm = build_vlm(cfg, tok)
    configure_stage(vlm, "align", cfg)
    if stage == "instruct":
        vlm = configure_stage(vlm, "instruct", cfg)
    align = stage == "align"
    ds = LlavaDataset(data["align_json" if align else "instruct_json"], data["image_folder"], tok,
                      get_template("plain" if align else cfg.lm.template), stage, 224, cfg.encoder.image_mean,
                      cfg.encoder.image_std, max_length=256)
    return vlm, ds, Collator(tok.pad_token_id)


def _batches(ds, collator, n: int = 3, micro: int = 4):
    order = list(ResumableSampler(len(ds), n * micro, 0))
    return [collator([ds[i] for i in order[k:k + micro]]) for k in range(0, n * micro, micro)]


def _losses(vlm, batches) -> list[float]:
    """A plain training loop (AdamW, clipping), the same dropout masks in every run (seeded per step)."""
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    vlm.train()
    out = []
    for k, b in enumerate(batches):
        torch.manual_seed(k)
        loss = vlm(**{x: v for x, v in b.items() if x != "has_image"}, labelled_logits_only=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


def _compare(data_root, tmp_path, base: list[str], cand: list[str], stage: str = "instruct"):
    va, ds, col = _cell(_cfg(data_root, tmp_path, *base), stage)
    vb, _, _ = _cell(_cfg(data_root, tmp_path, *cand), stage)
    batches = _batches(ds, col)
    return _losses(va, batches), _losses(vb, batches)


def test_sdpa_attention_matches_eager(data_root, tmp_path):
    a, b = _compare(data_root, tmp_path, ["trainer.attn_implementation=eager"], ["trainer.attn_implementation=sdpa"])
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL_KERNEL, (a, b)


def test_gradient_checkpointing_keeps_losses(data_root, tmp_path):
    a, b = _compare(data_root, tmp_path, [], ["trainer.gradient_checkpointing=true"])
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL_KERNEL, (a, b)


def test_fused_gelu_keeps_losses(data_root, tmp_path):
    from ablate.train.fused import fuse_gelu

    va, ds, col = _cell(_cfg(data_root, tmp_path), "instruct")
    vb, _, _ = _cell(_cfg(data_root, tmp_path), "instruct")
    assert fuse_gelu(vb) == 2 and fuse_gelu(vb) == 0          # Phi-2's two MLPs; idempotent
    batches = _batches(ds, col)
    a, b = _losses(va, batches), _losses(vb, batches)
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL_KERNEL, (a, b)


@pytest.mark.slow
def test_compile_keeps_losses(data_root, tmp_path):
    from ablate.train.stage import compiled

    va, ds, col = _cell(_cfg(data_root, tmp_path), "instruct")
    vb, _, _ = _cell(_cfg(data_root, tmp_path), "instruct")
    batches = _batches(ds, col, n=2)
    a = _losses(va, batches)
    with compiled(vb, True):
        b = _losses(vb, batches)
    assert not hasattr(vb.lm_model, "__dict__") or "forward" not in vb.lm_model.__dict__   # eager again after
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL_KERNEL, (a, b)


def test_bf16_autocast_close_to_fp32(data_root, tmp_path):
    va, ds, col = _cell(_cfg(data_root, tmp_path), "instruct")
    b = _batches(ds, col, n=1)[0]
    inputs = {x: v for x, v in b.items() if x != "has_image"}
    va.eval()
    with torch.no_grad():
        ref = va(**inputs).loss.item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = va(**inputs).loss.item()
    assert abs(ref - low) < TOL_BF16, (ref, low)


# ---- feature cache: through the real stage runner -----------------------------------------------------------
def test_feature_cache_gives_identical_stage1(data_root, tmp_path):
    from ablate.train.module import trainable_state
    from ablate.train.stage import run_stage

    results, weights = {}, {}
    for cache in (False, True, True):            # the second cached run reuses the cache
        cfg = _cfg(data_root, tmp_path, f"trainer.feature_cache={str(cache).lower()}")
        vlm, ds, col = _cell(cfg, "align")
        out = tmp_path / f"s1_{cache}_{len(results)}"
        results[len(results)] = run_stage(vlm, "align", cfg, ds, col, out)
        weights[len(weights)] = trainable_state(vlm)
    files = list((tmp_path / "features").glob("*/*.npy"))
    assert len(files) == 1                         # one cache, built once, read twice
    plain, cached, reused = results[0], results[1], results[2]
    assert plain.steps == cached.steps == 3
    assert abs(plain.final_loss - cached.final_loss) < TOL_EXACT
    assert cached.final_loss == reused.final_loss
    assert plain.tokens_seen == cached.tokens_seen and plain.images_seen == cached.images_seen
    for k, v in weights[0].items():
        assert torch.allclose(v, weights[1][k], atol=TOL_EXACT), k


def test_feature_cache_key_follows_encoder_weights(data_root, tmp_path):
    from ablate.train.feature_cache import encoder_key

    cfg = _cfg(data_root, tmp_path)
    vlm, _, _ = _cell(cfg, "align")
    k1 = encoder_key(vlm, cfg, "fp32")
    with torch.no_grad():
        next(vlm.encoder.parameters()).add_(1.0)
    assert encoder_key(vlm, cfg, "fp32")["weights"] != k1["weights"]
    cfg2 = _cfg(data_root, tmp_path, "encoder.feature_layer=-1")
    assert encoder_key(vlm, cfg2, "fp32")["encoder"] != k1["encoder"]


def test_feature_cache_refuses_a_trainable_encoder(data_root, tmp_path):
    from ablate.train.feature_cache import use_feature_cache

    cfg = _cfg(data_root, tmp_path, "trainer.feature_cache=true")
    vlm, ds, col = _cell(cfg, "instruct")       # freeze=train_both: the encoder trains in stage 2
    with pytest.raises(ValueError, match="frozen encoder"):
        use_feature_cache(vlm, cfg, ds, col, device="cpu", bf16=False)


# ---- length grouping ------------------------------------------------------------------------------------------
LENGTHS = [(7 * i) % 23 + 1 for i in range(50)]


def test_length_grouped_sampler_is_a_deterministic_resumable_permutation():
    s = ResumableSampler(50, 120, seed=3, lengths=LENGTHS, group_size=4, mega_groups=3)
    order = list(s)
    assert order == list(ResumableSampler(50, 120, seed=3, lengths=LENGTHS, group_size=4, mega_groups=3))
    assert sorted(order[:50]) == list(range(50)) and sorted(order[50:100]) == list(range(50))
    for k in (1, 17, 64):                        # resuming at sample k yields the rest of the same order
        assert list(ResumableSampler(50, 120, 3, start=k, lengths=LENGTHS, group_size=4, mega_groups=3)) == order[k:]
    ranks = [list(ResumableSampler(50, 120, 3, rank=r, world_size=2, lengths=LENGTHS, group_size=4,
                                   mega_groups=3)) for r in (0, 1)]
    assert ranks[0] == order[0::2] and ranks[1] == order[1::2]
    assert order != list(ResumableSampler(50, 120, seed=3))   # grouping does change the order


def test_length_grouping_cuts_padding():
    def padding(order):
        groups = [order[k:k + 4] for k in range(0, 48, 4)]
        return sum(max(LENGTHS[i] for i in g) * 4 - sum(LENGTHS[i] for i in g) for g in groups)

    grouped = list(ResumableSampler(50, 48, 0, lengths=LENGTHS, group_size=4))
    assert padding(grouped) < 0.5 * padding(list(ResumableSampler(50, 48, 0)))


def test_length_grouping_keeps_each_samples_loss(data_root, tmp_path):
    """The same samples batched at random or by length: the summed token loss is the same (padding is inert)."""
    vlm, ds, col = _cell(_cfg(data_root, tmp_path), "instruct")
    vlm.eval()
    idx = list(ResumableSampler(len(ds), 16, 0))
    grouped = sorted(idx, key=lambda i: -ds.lengths[i])

    def total(order):
        s = 0.0
        for k in range(0, 16, 4):
            b = col([ds[i] for i in order[k:k + 4]])
            with torch.no_grad():
                out = vlm(**{x: v for x, v in b.items() if x != "has_image"})
            n = (out.labels[:, 1:].masked_fill(out.attention_mask[:, :-1] == 0, -100) != -100).sum()
            s += out.loss.item() * int(n)
        return s

    a, b = total(idx), total(grouped)
    assert abs(a - b) / abs(a) < TOL_EXACT, (a, b)


def test_length_grouping_is_part_of_the_cell_id(tmp_path):
    from ablate.cell import cell_id, stage1_id

    base, grouped = compose([], root=tmp_path), compose(["trainer.length_grouping=true"], root=tmp_path)
    assert cell_id(base) != cell_id(grouped) and stage1_id(base) != stage1_id(grouped)
    for switch in ("trainer.feature_cache=true", "trainer.compile=true", "trainer.attn_implementation=eager",
                   "trainer.gradient_checkpointing=true", "trainer.num_workers=2", "trainer.fused_gelu=false"):
        assert cell_id(compose([switch], root=tmp_path)) == cell_id(base), switch


def test_stage_runner_with_grouping_logs_the_last_loss(data_root, tmp_path):
    from ablate.train.stage import run_stage

    cfg = _cfg(data_root, tmp_path, "trainer.length_grouping=true", "trainer.log_every_n_steps=10")
    vlm, ds, col = _cell(cfg, "instruct")
    res = run_stage(vlm, "instruct", cfg, ds, col, tmp_path / "s2")
    assert res.steps == 3 and res.final_loss is not None and res.final_loss == res.final_loss   # logged at the end
    assert res.tokens_seen > 0 and res.images_seen == 12
