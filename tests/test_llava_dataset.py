"""Tests of LlavaDataset, image preprocessing, Collator and LengthGroupedSampler on generated data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ablate.data import IGNORE_INDEX, IMAGE_TOKEN, DataError
from ablate.data.collate import Collator, LengthGroupedSampler
from ablate.data.image import preprocess_image, to_pixel_values
from ablate.data.llava import LlavaDataset
from ablate.data.synthetic import generate
from ablate.data.tokenizer import build_word_tokenizer

CONF = Path(__file__).resolve().parents[1] / "src" / "ablate" / "conf"
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate({"root": str(tmp_path_factory.mktemp("d")), "num_train": 16, "num_eval": 4})


def dataset(path, folder, tok, stage="instruct", **kw):
    args = dict(template="phi", stage=stage, resolution=224, image_mean=MEAN, image_std=STD, max_length=256)
    return LlavaDataset(path, folder, tok, **{**args, **kw})


@pytest.mark.parametrize("stage,json_key", [("align", "align_json"), ("instruct", "instruct_json")])
def test_samples_have_the_right_shapes(data, tok, stage, json_key):
    ds = dataset(getattr(data, json_key), data.image_folder, tok, stage=stage)
    assert len(ds) == 16
    s = ds[3]
    assert s["input_ids"].dtype == torch.long and s["labels"].dtype == torch.long
    assert s["input_ids"].shape == s["labels"].shape and s["input_ids"].ndim == 1
    assert s["pixel_values"].shape == (3, 224, 224) and s["pixel_values"].dtype == torch.float32
    assert s["has_image"] is True
    assert (s["input_ids"] == tok.convert_tokens_to_ids(IMAGE_TOKEN)).sum() == 1
    assert (s["labels"] != IGNORE_INDEX).any() and s["labels"][0] == IGNORE_INDEX
    # pixels are normalised: a light background maps near +0.9 with mean = std = 0.5
    assert -1.0 - 1e-5 <= s["pixel_values"].min() and s["pixel_values"].max() <= 1.0 + 1e-5
    batch = Collator(tok.pad_token_id)([ds[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape == (4, 3, 224, 224)


def test_text_only_records_and_image_token_placement(tmp_path, data, tok):
    recs = [{"id": "t", "conversations": [{"from": "human", "value": "How many shapes are there?"},
                                          {"from": "gpt", "value": "2"}]},
            # image token after the question (as in LCS-558K) is moved to the front
            {"id": "i", "image": "images/train-000000.png",
             "conversations": [{"from": "human", "value": "Describe the image briefly.\n<image>"},
                               {"from": "gpt", "value": "A red circle."}]}]
    p = tmp_path / "mixed.json"
    p.write_text(json.dumps(recs))
    ds = dataset(p, data.image_folder, tok)
    t, i = ds[0], ds[1]
    assert t["has_image"] is False and not t["pixel_values"].any()
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) not in t["input_ids"].tolist()
    assert "USER:<image>Describe" in "".join(tok.decode(i["input_ids"]).split())


def test_truncation_to_max_length(data, tok):
    ds = dataset(data.instruct_json, data.image_folder, tok, max_length=40)
    assert max(len(ds[k]["input_ids"]) for k in range(len(ds))) == 40


def test_malformed_json_names_file_and_position(tmp_path, tok):
    p = tmp_path / "broken.json"
    p.write_text('[{"id": "a", "conversations": [}')
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON at line 1 column \d+.*Fix"):
        dataset(p, tmp_path, tok)
    with pytest.raises(DataError, match=r"nope\.json does not exist"):
        dataset(tmp_path / "nope.json", tmp_path, tok)
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        dataset(tmp_path / "obj.json", tmp_path, tok)


def test_bad_records_are_listed_with_a_count(tmp_path, data, tok):
    good = json.loads(data.instruct_json.read_text())[:3]
    bad = [{"id": "no-conv", "image": "images/train-000000.png"},
           {"id": "no-img", "image": "images/missing.png", "conversations": good[0]["conversations"]},
           {"id": "bad-role", "conversations": [{"from": "bot", "value": "x"}]}] + \
          [{"id": f"m{i}", "image": f"images/m{i}.png", "conversations": good[0]["conversations"]} for i in range(5)]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(good + bad))
    with pytest.raises(DataError) as e:
        dataset(p, data.image_folder, tok)
    msg = str(e.value)
    assert "bad.json: 8 of 11 records are unusable; first 5" in msg
    assert "#3 (id='no-conv'): missing key 'conversations'" in msg
    assert "#4 (id='no-img'): image" in msg and "missing.png not found" in msg
    assert "#5 (id='bad-role'): turn 0" in msg and "m3" not in msg


def test_corrupt_image_names_the_file(tmp_path, tok):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    Image.new("RGB", (300, 300), (255, 0, 0)).save(tmp_path / "images" / "t.png")
    (tmp_path / "images" / "trunc.png").write_bytes((tmp_path / "images" / "t.png").read_bytes()[:200])
    recs = [{"id": k, "image": f"images/{k}.png", "conversations": [{"from": "human", "value": "<image>\nhi"},
                                                                    {"from": "gpt", "value": "red"}]}
            for k in ("x", "trunc")]
    (tmp_path / "c.json").write_text(json.dumps(recs))
    ds = dataset(tmp_path / "c.json", tmp_path, tok)    # validation checks existence only: decoding is lazy
    for i, name in enumerate(("x.png", "trunc.png")):
        with pytest.raises(DataError, match=rf"image .*{name} \(record {recs[i]['id']}\) is corrupt.*Fix"):
            ds[i]


def test_pad_to_square_uses_the_mean_colour(tmp_path):
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    x = to_pixel_values(img, 64, [0.2, 0.4, 0.6], [0.1, 0.1, 0.1])
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[:, 2, 32], torch.zeros(3), atol=0.05)       # padding band -> 0 after normalising
    assert torch.allclose(x[:, 32, 32], torch.tensor([8.0, 6.0, 4.0]), atol=0.05)   # white content
    img.save(tmp_path / "w.png")
    assert torch.equal(preprocess_image(tmp_path / "w.png", 64, [0.2, 0.4, 0.6], [0.1, 0.1, 0.1]), x)
    with pytest.raises(DataError, match="does not exist"):
        preprocess_image(tmp_path / "none.png", 64, MEAN, STD)


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads(side):
    def s(n, img=True):
        return {"input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1) * 10,
                "pixel_values": torch.ones(3, 8, 8) if img else torch.zeros(3, 8, 8), "has_image": img}
    b = Collator(pad_token_id=0, padding_side=side)([s(3), s(5, img=False)])
    assert b["input_ids"].dtype == torch.long and b["labels"].dtype == torch.long
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (2, 5)
    assert b["input_ids"][1].tolist() == [1, 2, 3, 4, 5] and b["attention_mask"][1].tolist() == [1] * 5
    if side == "right":
        assert b["input_ids"][0].tolist() == [1, 2, 3, 0, 0]
        assert b["labels"][0].tolist() == [10, 20, 30, IGNORE_INDEX, IGNORE_INDEX]
        assert b["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    else:
        assert b["input_ids"][0].tolist() == [0, 0, 1, 2, 3]
        assert b["labels"][0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 10, 20, 30]
        assert b["attention_mask"][0].tolist() == [0, 0, 1, 1, 1]
    assert b["has_image"].tolist() == [True, False] and b["pixel_values"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="padding_side"):
        Collator(0, "middle")


def test_length_grouped_sampler_is_seeded_and_groups(data, tok):
    ds = dataset(data.instruct_json, data.image_folder, tok)
    lengths = ds.lengths
    a = list(LengthGroupedSampler(lengths, batch_size=4, seed=1, mega_batch_mult=2))
    assert sorted(a) == list(range(len(ds))) and a == list(LengthGroupedSampler(lengths, 4, seed=1, mega_batch_mult=2))
    sampler = LengthGroupedSampler(lengths, 4, seed=1, mega_batch_mult=2)
    sampler.set_epoch(1)
    assert list(sampler) != a
    for start in range(0, len(a), 8):   # each mega-batch is sorted longest first
        chunk = [lengths[i] for i in a[start:start + 8]]
        assert chunk == sorted(chunk, reverse=True)


def test_from_config_with_the_real_yaml(tmp_path):
    cfg = OmegaConf.create({
        "paths": {"data_root": str(tmp_path)}, "resolution": 224,
        "data": OmegaConf.load(CONF / "data/synthetic.yaml"), "encoder": OmegaConf.load(CONF / "encoder/siglip.yaml"),
        "lm": OmegaConf.load(CONF / "lm/qwen15_1_8b.yaml"), "scale": OmegaConf.load(CONF / "scale/tiny.yaml")})
    cfg.data.num_train, cfg.data.num_eval = 8, 2
    from ablate.data.tokenizer import build_tokenizer
    tok = build_tokenizer(cfg)
    for stage in ("align", "instruct"):
        ds = LlavaDataset.from_config(cfg, stage, tok)
        assert len(ds) == 8 and ds[0]["pixel_values"].shape == (3, 224, 224)
    assert tok.convert_tokens_to_ids("<|im_end|>") in ds[0]["labels"].tolist()    # chatml for Qwen
