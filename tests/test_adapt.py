"""Tests of ablate.models.adapt and training: stage flags, gradients, LoRA counts and placement, tiny-rank clipping,
config errors, gradient checkpointing."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from peft import PeftModel
from test_models import IMG, ROWS, _batch, compose, lora_params, make_tokenizer

from ablate.models.adapt import configure_stage, format_param_table, param_table, tuning_errors, validate_tuning
from ablate.models.build import build_vlm
from ablate.models.registry import ModelConfigError


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build_vlm(compose("encoder=clip", "lm=phi2"), make_tokenizer())


def _total(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_align_trains_the_projector_only(base):
    vlm = configure_stage(copy.deepcopy(base), "align", compose())
    t = param_table(vlm)
    assert t["encoder"] == {"trainable": 0, "frozen": _total(base.encoder)}
    assert t["lm"] == {"trainable": 0, "frozen": _total(base.lm)}
    assert t["projector"] == {"trainable": _total(base.projector), "frozen": 0}


def test_lora_on_both_modules_counts_and_clipping(base, caplog):
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora", "tuning.targets=both", "freeze=train_both")
    with caplog.at_level(logging.INFO, logger="ablate.models.adapt"):
        vlm = configure_stage(copy.deepcopy(base), "instruct", cfg)
    t = param_table(vlm)
    # encoder width 64 < r=128: clipped to 64 at tiny scale; LM layers are >= 128 wide: r stays 128
    enc_lora = lora_params(base.encoder, cfg.encoder.lora_targets, 128, tiny=True)
    assert enc_lora == 64 * sum(i + o for i, o in [(64, 64)] * 4 + [(64, 128), (128, 64)])   # 1 block, 6 linears
    assert t["encoder"] == {"trainable": enc_lora, "frozen": _total(base.encoder)}
    assert t["lm"] == {"trainable": lora_params(base.lm, cfg.lm.lora_targets, 128, tiny=True),
                       "frozen": _total(base.lm)}
    assert "r=128 exceeds the smallest targeted layer (64)" in caplog.text
    assert isinstance(vlm.encoder.model, PeftModel) and isinstance(vlm.lm, PeftModel)
    # alpha is scaled with r: alpha/r stays 256/128 = 2 on both modules
    scalings = {m.scaling["default"] for m in vlm.modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}
    assert scalings == {2.0}
    dropouts = {m.lora_dropout["default"].p for m in vlm.modules() if hasattr(m, "lora_dropout")}
    assert dropouts == {0.05}


def test_lora_rank_is_not_clipped_at_full_scale(base):
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora", "tuning.targets=encoder", "freeze=train_encoder",
                  "tuning.dropout=0.1")
    cfg.scale.arch = "full"   # only what configure_stage reads; the model stays tiny
    vlm = configure_stage(copy.deepcopy(base), "instruct", cfg)
    assert param_table(vlm)["encoder"]["trainable"] == lora_params(base.encoder, cfg.encoder.lora_targets, 128,
                                                                   tiny=False)
    assert {m.lora_dropout["default"].p for m in vlm.modules() if hasattr(m, "lora_dropout")} == {0.1}


def test_one_step_changes_exactly_the_trainable_parameters(base):
    # LoRA on the LM + full encoder: base LM weights must not move, adapters, encoder and projector must
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora", "freeze=train_both")
    vlm = configure_stage(copy.deepcopy(base), "instruct", cfg)
    for n, p in vlm.named_parameters():   # peft zero-inits lora_B: nudge it so lora_A gets a gradient too
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    opt = torch.optim.SGD([p for p in vlm.parameters() if p.requires_grad], lr=0.1)
    ids, mask, labels = _batch(ROWS)
    vlm(ids, mask, torch.randn(2, 3, 224, 224), labels=labels).loss.backward()
    opt.step()
    for n, p in vlm.named_parameters():
        moved = not torch.equal(p, before[n])
        if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0:
            assert moved, n
        if not p.requires_grad:
            assert not moved, n
    trained = {n.split(".")[0] for n, p in vlm.named_parameters() if not torch.equal(p, before[n])}
    assert trained == {"encoder", "projector", "lm"}
    assert all("lora_" in n for n, p in vlm.lm.named_parameters() if not torch.equal(p, before["lm." + n]))


def test_configure_stage_twice_does_not_wrap_twice(base):
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora")
    vlm = configure_stage(copy.deepcopy(base), "instruct", cfg)
    first = param_table(vlm)
    configure_stage(vlm, "align", cfg)
    assert param_table(vlm)["lm"]["trainable"] == 0
    configure_stage(vlm, "instruct", cfg)
    assert param_table(vlm) == first
    assert not isinstance(vlm.lm.get_base_model(), PeftModel)
    with pytest.raises(ModelConfigError, match="already carries LoRA adapters"):
        configure_stage(vlm, "instruct", compose("encoder=clip", "lm=phi2", "tuning=full"))


def test_lora_targets_must_name_linear_layers(base):
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora", "lm.lora_targets=[query]")
    with pytest.raises(ModelConfigError, match=r"lm.lora_targets=\['query'\]: matches no nn.Linear.*fc1"):
        configure_stage(copy.deepcopy(base), "instruct", cfg)


def test_lora_on_a_frozen_module_is_refused_before_building():
    with pytest.raises(ModelConfigError) as e:
        validate_tuning(compose("tuning=lora", "freeze=frozen_both"))
    assert "tuning.targets='lm'" in str(e.value) and "freeze=frozen_both" in str(e.value)
    assert "use tuning=full" in str(e.value)
    with pytest.raises(ModelConfigError, match="freeze=train_lm keeps it frozen.*valid tuning.targets with "
                                               "freeze=train_lm: lm$"):
        validate_tuning(compose("tuning=lora", "tuning.targets=both", "freeze=train_lm"))
    validate_tuning(compose("tuning=lora", "tuning.targets=encoder", "freeze=train_encoder"))


def test_bad_tuning_values_are_all_reported():
    errors = tuning_errors(compose("tuning=lora", "tuning.r=0", "tuning.alpha=-1", "tuning.dropout=1.5",
                                   "freeze.train_lm=maybe"))
    text = "\n".join(errors)
    for key in ("tuning.r=0", "tuning.alpha=-1", "tuning.dropout=1.5", "freeze.train_lm='maybe'"):
        assert key in text
    assert tuning_errors(compose("tuning.mode=qlora")) == ["tuning.mode='qlora': valid: full, lora"]
    assert "tuning.targets='all': valid: lm, encoder, both" in tuning_errors(compose("tuning=lora",
                                                                                     "tuning.targets=all"))
    with pytest.raises(ValueError, match="stage='pretrain': valid: align, instruct"):
        configure_stage(None, "pretrain", compose())


def test_param_table_text(base):
    text = format_param_table(param_table(configure_stage(copy.deepcopy(base), "align", compose())))
    assert text.splitlines()[0].split() == ["module", "trainable", "frozen", "%", "trained"]
    assert f"{_total(base.projector):,}" in text and "100.00%" in text
    assert text.splitlines()[-1].startswith("total")


def test_lora_vlm_still_generates(base):
    cfg = compose("encoder=clip", "lm=phi2", "tuning=lora", "freeze=train_both", "tuning.targets=both")
    vlm = configure_stage(copy.deepcopy(base), "instruct", cfg)
    ids, mask, _ = _batch([[IMG, 10, 11], [12, 13]], side="left")
    out = vlm.generate(ids, mask, torch.randn(1, 3, 224, 224), max_new_tokens=3)
    assert out.shape[0] == 2 and out.shape[1] <= 3


def test_align_backward_reaches_the_projector_only(base):
    ids, mask, labels = _batch(ROWS)
    v = copy.deepcopy(base).train()
    configure_stage(v, "align", compose())
    v(ids, mask, torch.randn(2, 3, 224, 224), labels=labels).loss.backward()
    assert v.projector.fc1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in v.lm.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    tok = make_tokenizer()
    ids, mask, labels = _batch(ROWS)
    px = torch.randn(2, 3, 224, 224)
    grads = []
    for ckpt in ("false", "true"):
        torch.manual_seed(0)
        v = build_vlm(compose("encoder=clip", "lm=qwen15_1_8b", f"trainer.gradient_checkpointing={ckpt}"), tok)
        v.train()
        v(ids, mask, px, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in v.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("lm", ["phi2", "qwen15_1_8b", "pythia_1_4b", "stablelm_1_6b"])
def test_labelled_logits_only_gives_the_same_loss_and_gradients(lm):
    torch.manual_seed(0)
    v = build_vlm(compose("encoder=clip", f"lm={lm}"), make_tokenizer()).eval()   # eval: no dropout
    for side in ("right", "left"):
        v.padding_side = side
        ids, mask, labels = _batch(ROWS, side=side)
        px = torch.randn(2, 3, 224, 224)
        results = []
        for only in (False, True):
            v.zero_grad()
            out = v(ids, mask, px, labels=labels, labelled_logits_only=only)
            out.loss.backward()
            results.append((out.loss.detach(), v.projector.fc1.weight.grad.clone(), out.logits.shape[1]))
        assert torch.allclose(results[0][0], results[1][0], atol=1e-5), (lm, side)
        assert torch.allclose(results[0][1], results[1][1], atol=1e-6), (lm, side)
        assert results[1][2] < results[0][2]   # fewer positions through the LM head
