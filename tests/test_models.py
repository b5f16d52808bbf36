"""Tests of ablate.models at tiny scale: every config combination builds, image tokens, merge, loss, generate, errors."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose as hydra_compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

from ablate.models.adapt import configure_stage, param_table, tuning_errors
from ablate.models.build import build_vlm
from ablate.models.encoder import build_encoder, num_image_tokens, valid_resolution
from ablate.models.registry import ENCODERS, ModelConfigError

CONF = Path(__file__).resolve().parents[1] / "src" / "ablate" / "conf"
ENCODER_NAMES = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml"))
LM_NAMES = sorted(p.stem for p in (CONF / "lm").glob("*.yaml"))
TUNINGS = ["full", "lora"]
FREEZES = ["frozen_both", "train_encoder", "train_lm", "train_both"]


def hydra_context():
    return initialize_config_dir(config_dir=str(CONF), version_base="1.3")


def compose(*overrides: str):
    """The real root config at scale=tiny, resolution=224, plus overrides (groups not written yet are dropped)."""
    missing = [f"~{g}" for g in ("data", "eval") if not (CONF / g / "synthetic.yaml").exists()]
    args = ["scale=tiny", "resolution=224", *missing, *overrides]
    if GlobalHydra.instance().is_initialized():     # inside a caller's hydra_context(): compose only
        return hydra_compose("config", overrides=args)
    with hydra_context():
        return hydra_compose("config", overrides=args)


def make_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A 44-token word-level tokenizer: <pad>=0, <eos>=1, <unk>=2, <image>=3, w0..w39 = 4..43."""
    words = ["<pad>", "<eos>", "<unk>", "<image>"] + [f"w{i}" for i in range(40)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   additional_special_tokens=["<image>"], padding_side=padding_side)


IMG = 3   # the <image> id of make_tokenizer()


def lora_params(module: nn.Module, suffixes, r_max: int, tiny: bool) -> int:
    """LoRA parameters peft should add: r * (in + out) per targeted nn.Linear, r clipped at tiny scale."""
    hits = [m for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in suffixes]
    assert hits, f"no Linear named {suffixes}"
    r = min(r_max, min(min(m.in_features, m.out_features) for m in hits)) if tiny else r_max
    return sum(r * (m.in_features + m.out_features) for m in hits)


# ---- every encoder x lm x tuning x freeze -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tuning_freeze_nodes():
    """The tuning and freeze nodes of every (tuning, freeze) pair, composed by Hydra once."""
    out = {}
    for t in TUNINGS:
        for f in FREEZES:
            cfg = compose(f"tuning={t}", f"freeze={f}")
            out[t, f] = (cfg.tuning, cfg.freeze)
    return out


def combination(pair_cfg, tuning: str, freeze: str):
    """cfg of (encoder, lm) x (tuning, freeze): Hydra's result, since no group interpolates another (checked by
    test_full_product_composes_like_the_shortcut)."""
    cfg = copy.deepcopy(pair_cfg)
    cfg.tuning, cfg.freeze = _tuning_freeze_nodes()[tuning, freeze]
    return cfg


@pytest.mark.parametrize("encoder", ENCODER_NAMES)
def test_every_combination_composes_builds_and_counts(encoder):
    tok = make_tokenizer()
    for lm in LM_NAMES:
        pair = compose(f"encoder={encoder}", f"lm={lm}")
        vlm = build_vlm(pair, tok)
        n = {m: sum(p.numel() for p in getattr(vlm, m).parameters()) for m in ("encoder", "projector", "lm")}
        d_v, d_lm = vlm.encoder.hidden_size, vlm.lm.config.hidden_size
        assert n["projector"] == d_v * d_lm + d_lm + d_lm * d_lm + d_lm
        assert vlm.lm.get_input_embeddings().weight.shape[0] == len(tok)
        for tuning in TUNINGS:
            for freeze in FREEZES:
                cfg = combination(pair, tuning, freeze)
                lora_on_frozen = tuning == "lora" and not cfg.freeze.train_lm   # tuning/lora.yaml targets the lm
                assert bool(tuning_errors(cfg)) == lora_on_frozen, (encoder, lm, tuning, freeze)
                v = copy.deepcopy(vlm) if tuning == "lora" else vlm   # full mode re-sets every flag: reuse
                if lora_on_frozen:
                    with pytest.raises(ModelConfigError, match="tuning.targets='lm'"):
                        configure_stage(v, "instruct", cfg)
                    continue
                table = param_table(configure_stage(v, "instruct", cfg))
                expect_lm = n["lm"] if cfg.freeze.train_lm else 0
                lm_frozen = n["lm"] - expect_lm
                if tuning == "lora":
                    expect_lm = lora_params(vlm.lm, cfg.lm.lora_targets, 128, tiny=True)
                    lm_frozen = n["lm"]
                enc_train = n["encoder"] if cfg.freeze.train_encoder else 0
                assert table == {"encoder": {"trainable": enc_train, "frozen": n["encoder"] - enc_train},
                                 "projector": {"trainable": n["projector"], "frozen": 0},
                                 "lm": {"trainable": expect_lm, "frozen": lm_frozen}}, (encoder, lm, tuning, freeze)


@pytest.mark.slow
def test_full_product_composes_like_the_shortcut():
    with hydra_context():
        for e in ENCODER_NAMES:
            for lm in LM_NAMES:
                pair = compose(f"encoder={e}", f"lm={lm}")
                for t in TUNINGS:
                    for f in FREEZES:
                        assert compose(f"encoder={e}", f"lm={lm}", f"tuning={t}", f"freeze={f}") == \
                            combination(pair, t, f), (e, lm, t, f)


# ---- image tokens -------------------------------------------------------------------------------------------------
TOKENS = {  # (encoder, resolution) -> image tokens, CLS dropped; written out, not computed
    ("clip", 224): 256, ("clip", 336): 576, ("clip", 448): 1024,
    ("siglip", 224): 256, ("siglip", 336): 576, ("siglip", 384): 729, ("siglip", 448): 1024,
    ("dinov2", 224): 256, ("dinov2", 336): 576, ("dinov2", 448): 1024,
    ("vit_in21k", 224): 196, ("vit_in21k", 336): 441, ("vit_in21k", 384): 576, ("vit_in21k", 448): 784,
    ("open_clip", 224): 256, ("open_clip", 336): 576,
}


@pytest.mark.parametrize("encoder", ["clip", "siglip", "dinov2", "vit_in21k", "open_clip"])
def test_image_tokens_at_every_supported_resolution(encoder):
    built = None
    for res, expected in [(r, n) for (e, r), n in TOKENS.items() if e == encoder]:
        cfg = compose(f"encoder={encoder}", f"resolution={res}")
        assert valid_resolution(cfg.encoder, res) == (True, "")
        assert num_image_tokens(cfg.encoder, res) == expected
        if built is None or encoder == "open_clip":   # transformers encoders interpolate; open_clip is built per size
            built = build_encoder(cfg.encoder, arch_scale="tiny", weights="random", resolution=res)
        assert built(torch.randn(2, 3, res, res)).shape == (2, expected, 64)


def test_invalid_resolution_is_refused_with_the_fix():
    cfg = compose("encoder=clip", "resolution=400")
    ok, msg = valid_resolution(cfg.encoder, 400)
    assert not ok and "392" in msg and "406" in msg and "336" in msg
    assert valid_resolution(compose("encoder=siglip").encoder, 384) == (True, "")     # native, not a multiple
    assert not valid_resolution(compose("encoder=clip").encoder, 384)[0]
    with pytest.raises(ModelConfigError, match=r"resolution=400: .*multiple of 14"):
        build_vlm(cfg, make_tokenizer())


def test_drop_cls_false_keeps_the_cls_token():
    enc_cfg = compose("encoder=clip", "encoder.drop_cls=false").encoder
    assert num_image_tokens(enc_cfg, 224) == 257
    assert build_encoder(enc_cfg, arch_scale="tiny", weights="random", resolution=224)(
        torch.randn(1, 3, 224, 224)).shape == (1, 257, 64)


@pytest.mark.parametrize("encoder", ["clip", "siglip", "dinov2", "vit_in21k"])
def test_features_are_the_feature_layer_of_the_untrimmed_model(encoder):
    cfg = compose(f"encoder={encoder}", "encoder.tiny.num_hidden_layers=3")
    enc = build_encoder(cfg.encoder, arch_scale="tiny", weights="random", resolution=224).eval()
    spec = ENCODERS[cfg.encoder.family]
    full = spec.model_cls(enc.backbone.config.__class__(**{**enc.backbone.config.to_dict(), "num_hidden_layers": 3}))
    missing, _ = full.load_state_dict(enc.backbone.state_dict(), strict=False)
    assert all(".2." in k or "layernorm" in k or "head" in k or "pooler" in k or "mask_token" in k for k in missing)
    x = torch.randn(2, 3, 224, 224)
    kw = {"interpolate_pos_encoding": True} if spec.interpolate_kwarg else {}
    with torch.no_grad():
        ref = full.eval()(pixel_values=x, output_hidden_states=True, **kw).hidden_states[-2][:, enc.prefix:]
        assert torch.allclose(enc(x), ref, atol=1e-5)


def test_open_clip_features_are_the_penultimate_block():
    import open_clip  # noqa: F401
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = compose("encoder=open_clip")
    enc = build_encoder(cfg.encoder, arch_scale="tiny", weights="random", resolution=224).eval()
    full = _build_vision_tower(768, CLIPVisionCfg(width=64, layers=2, head_width=16, mlp_ratio=2.0, patch_size=14,
                                                  image_size=224)).eval()
    full.load_state_dict(enc.backbone.state_dict(), strict=False)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = full.forward_intermediates(x, indices=[0], intermediates_only=True, output_fmt="NLC")
        assert torch.allclose(enc(x), ref["image_intermediates"][0], atol=1e-5)
    assert len(enc.backbone.transformer.resblocks) == 1


# ---- forward: merge, padding, loss --------------------------------------------------------------------------------
ROWS = [[IMG, 10, 11, 12, 13, 14], [10, IMG, 11], [20, 21, 22, 23]]   # image first, image inside, text only


def _batch(rows, side="right"):
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        ids[b, sl], mask[b, sl] = torch.tensor(r), 1
    labels = ids.masked_fill((mask == 0) | (ids == IMG), -100)
    return ids, mask, labels


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    return build_vlm(compose("encoder=siglip", "lm=phi2", "lm.tiny.num_hidden_layers=1"), make_tokenizer()).eval()


def test_forward_mixed_lengths_and_text_only(vlm):
    L = num_image_tokens(compose("encoder=siglip").encoder, 224)
    ids, mask, labels = _batch(ROWS)
    px = torch.randn(2, 3, 224, 224)
    out = vlm(ids, mask, px, labels=labels)
    assert out.logits.shape == (3, L + 5, len(make_tokenizer()))
    assert out.attention_mask.sum(1).tolist() == [L + 5, L + 2, 4]
    assert (out.labels[0, :L] == -100).all() and out.labels[0, L:].tolist() == [10, 11, 12, 13, 14]
    assert out.labels[1, :L + 2].tolist() == [10] + [-100] * L + [11]
    # each row alone gives the same logits on its real positions: padding and batching change nothing
    for b, row in enumerate(ROWS):
        i1, m1, _ = _batch([row])
        one = vlm(i1, m1, px[[0 if b == 0 else 1]] if IMG in row else None).logits[0]
        assert torch.allclose(out.logits[b, : one.shape[0]], one, atol=1e-4)
    # the loss is the shifted cross-entropy over labelled positions
    ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), out.labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, ref, atol=1e-6)
    # left padding in, left padding out: same loss; one image slot per row (zeros for the text row): same logits
    left = copy.copy(vlm)
    left.padding_side = "left"
    assert torch.allclose(left(*_batch(ROWS, side="left")[:2], px, labels=_batch(ROWS, "left")[2]).loss, out.loss,
                          atol=1e-5)
    per_row = torch.cat([px, torch.zeros(1, 3, 224, 224)])
    assert torch.allclose(vlm(ids, mask, per_row).logits, out.logits, atol=1e-6)
    # precomputed encoder features (a feature cache) give the same result as pixels
    feats = vlm.encode_images(px)
    assert feats.shape == (2, L, vlm.encoder.hidden_size)
    assert torch.allclose(vlm(ids, mask, image_features=feats, labels=labels).loss, out.loss, atol=1e-6)


def test_image_count_mismatch_is_an_error(vlm):
    ids, mask, _ = _batch(ROWS)
    with pytest.raises(ValueError, match="4 images for 2 <image> placeholders"):
        vlm(ids, mask, torch.randn(4, 3, 224, 224))
    with pytest.raises(ValueError, match="neither pixel_values nor image_features"):
        vlm(ids, mask)


# ---- generate ------------------------------------------------------------------------------------------------------
PROMPTS = [[IMG, 10, 11, 12, 13, 14, 15], [10, IMG, 11], [20, 21], [IMG, 30, 31, 32, 33]]


def _cut(seq, eos=1):   # the tokens up to and including the first eos
    return seq.tolist()[: seq.tolist().index(eos) + 1] if eos in seq.tolist() else seq.tolist()


@pytest.mark.parametrize("lm", ["phi2", "qwen15_1_8b", "pythia_1_4b", "stablelm_1_6b"])
def test_generate_does_not_depend_on_batch_size(lm):
    torch.manual_seed(1)
    v = build_vlm(compose("encoder=clip", f"lm={lm}"), make_tokenizer(padding_side="left")).eval()
    px = torch.randn(3, 3, 224, 224)
    img_of = {0: 0, 1: 1, 3: 2}
    ids, mask, _ = _batch(PROMPTS, side="left")
    batched = v.generate(ids, mask, px, max_new_tokens=8)
    for b, row in enumerate(PROMPTS):
        i1, m1, _ = _batch([row])
        single = v.generate(i1, m1, px[[img_of[b]]] if b in img_of else None, max_new_tokens=8)[0]
        assert _cut(batched[b]) == _cut(single), (lm, b)
        assert len(_cut(single)) > 0
    # the KV-cache result equals greedy decoding by full forward passes
    i1, m1, _ = _batch([PROMPTS[0]])
    seq = i1
    for _ in range(4):
        nxt = v(seq, torch.ones_like(seq), px[[0]]).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert seq[0, i1.shape[1]:].tolist() == v.generate(i1, m1, px[[0]], max_new_tokens=4)[0].tolist()[:4]


@pytest.mark.parametrize("lm,attn", [("phi2", "sdpa"), ("qwen15_1_8b", "sdpa"), ("pythia_1_4b", "sdpa"),
                                     ("stablelm_1_6b", "sdpa"), ("phi2", "eager")])
def test_shared_prefix_generation_equals_whole_prompts(lm, attn):
    """Rows about the same image share the prefix's KV cache; each row's tokens equal its own whole-prompt run
    (with both attention implementations: the shared path hands the LM its own 4-D masks)."""
    torch.manual_seed(2)
    cfg = compose("encoder=clip", f"lm={lm}", f"trainer.attn_implementation={attn}")
    v = build_vlm(cfg, make_tokenizer(padding_side="left")).eval()
    assert v.lm_model.config._attn_implementation == attn
    px = torch.randn(2, 3, 224, 224)
    prefix, suffixes, image_of = [10, 11], [[12, 13, 14], [15], [16, 17], [12, 13, 14, 18, 19], [20]], [0, 1, 1, 0, 0]
    shared = v.generate_shared_prefix(prefix, suffixes, image_of, pixel_values=px, max_new_tokens=6)
    assert shared.shape[0] == len(suffixes)
    for b, (suffix, img) in enumerate(zip(suffixes, image_of)):
        i1, m1, _ = _batch([prefix + [IMG] + suffix])
        alone = v.generate(i1, m1, px[[img]], max_new_tokens=6)[0]
        assert _cut(shared[b]) == _cut(alone), (lm, b)
    with pytest.raises(ValueError, match="at least one token after the image"):
        v.generate_shared_prefix(prefix, [[12], []], [0, 1], pixel_values=px)


def test_shared_prefix_split():
    from ablate.eval.generate import _shared_prefix

    assert _shared_prefix([[1, 2, IMG, 5], [1, 2, IMG, 6, 7]], IMG) == ([1, 2], [[5], [6, 7]])
    assert _shared_prefix([[1, 2, IMG, 5], [1, 3, IMG, 6]], IMG) is None    # different text before the image
    assert _shared_prefix([[1, 2, IMG, 5], [1, 2, 5]], IMG) is None         # a text-only row
    assert _shared_prefix([[1, IMG, 2, IMG, 3]], IMG) is None                # two images in one prompt
    assert _shared_prefix([[1, 2, IMG]], IMG) is None                        # nothing after the image


# ---- configuration errors (checkpoint errors: tests/test_full_size.py) --------------------------------------------
def test_config_mistakes_are_named():
    tok = make_tokenizer()
    with pytest.raises(ModelConfigError, match=r"\['num_layers'\].*PhiConfig"):
        build_vlm(compose("+lm.tiny.num_layers=2"), tok)
    with pytest.raises(ModelConfigError, match="encoder.feature_layer=-5"):
        build_vlm(compose("encoder.feature_layer=-5"), tok)
    with pytest.raises(ModelConfigError, match="scale.arch='tiny' with scale.weights='pretrained'"):
        build_vlm(compose("scale.weights=pretrained"), tok)
    with pytest.raises(ModelConfigError, match="lm.family='llama'"):
        build_vlm(compose("lm.family=llama"), tok)
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, "<unk>")),
                                   unk_token="<unk>", eos_token="a")
    with pytest.raises(ModelConfigError, match="no <image> token"):
        build_vlm(compose(), bare)
