"""Tests of conversation templates (exact label masks, every template, multi-turn) and of the tokenizers."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ablate.data import IGNORE_INDEX, IMAGE_TOKEN, DataError
from ablate.data.conversation import TEMPLATES, get_template
from ablate.data.tokenizer import EOS, IM_END, IM_START, PAD, build_tokenizer, build_word_tokenizer

CONV = [
    {"from": "human", "value": "<image>\nWhat color is the square?\nA. purple\nB. blue\n"
                               "Answer with the option's letter from the given choices directly."},
    {"from": "gpt", "value": "B"},
    {"from": "human", "value": "Is there any text in the image?"},
    {"from": "gpt", "value": "The text K7 is written in a corner."},
    {"from": "human", "value": "How many shapes are there?"},
    {"from": "gpt", "value": "3"},
]
CAPTION = [{"from": "human", "value": "<image>\nDescribe the image briefly."},
           {"from": "gpt", "value": "A large red circle on the left."}]


@pytest.fixture(scope="module")
def word_tok():
    return build_word_tokenizer()


@pytest.fixture(scope="module")
def bpe_tok():
    """A byte-level BPE tokenizer trained here (no download): GPT-2/Phi/Pythia/Qwen-like, decodes exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [EOS, IM_START, IM_END, IMAGE_TOKEN]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [t["value"] for t in CONV + CAPTION] * 20 + [TEMPLATES["phi"].system, "USER: ASSISTANT: system user"]
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   additional_special_tokens=[IM_START, IM_END, IMAGE_TOKEN])


def spans(ids, labels):
    """Contiguous supervised runs of ids."""
    out, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            if cur:
                out.append(cur)
            cur = []
        else:
            assert lab == i   # supervised labels are the input ids themselves (shifted in the model)
            cur.append(i)
    return out + ([cur] if cur else [])


def expected_replies(template, tok, conv, stage):
    eot = template.eot if (template.chat and stage == "instruct" and template.eot) else tok.eos_token
    prefix = template.reply_prefix if (template.chat and stage == "instruct") else ""
    return [prefix + t["value"] + eot for t in conv if t["from"] == "gpt"]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("stage", ["align", "instruct"])
@pytest.mark.parametrize("conv", [CONV, CAPTION], ids=["multi_turn", "caption"])
@pytest.mark.parametrize("tok_name", ["word", "bpe"])
def test_supervised_tokens_are_exactly_replies_plus_end_of_turn(name, stage, conv, tok_name, word_tok, bpe_tok):
    tok = word_tok if tok_name == "word" else bpe_tok
    t = get_template(name)
    ids, labels = t.encode(conv, tok, stage)
    assert len(ids) == len(labels)
    assert tok.unk_token_id is None or tok.unk_token_id not in ids     # every word is in the vocabulary
    assert ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 1
    got = [tok.decode(s) for s in spans(ids, labels)]
    want = expected_replies(t, tok, conv, stage)
    if not (t.chat and stage == "instruct"):
        # plain format: nothing unsupervised between replies, so they form one run
        got, want = ["".join(got)], ["".join(want)]
    if tok_name == "bpe":
        assert got == want           # byte-level: decoding is exact, spaces included
    else:                            # word-level: decoding re-spaces words; compare without whitespace
        assert ["".join(g.split()) for g in got] == ["".join(w.split()) for w in want]
    # each supervised run ends with the end-of-turn id, and nothing of the prompts is supervised
    eot_id = tok.convert_tokens_to_ids(want[0][-len(EOS):] if want[0].endswith(EOS) else IM_END)
    assert all(s[-1] == eot_id for s in spans(ids, labels))


@pytest.mark.parametrize("name", ["phi", "chatml", "plain_chat"])
def test_prompt_is_the_training_prefix(name, bpe_tok, word_tok):
    t = get_template(name)
    q = "What color is the square?"
    for tok in (bpe_tok, word_tok):
        ids, labels = t.encode([{"from": "human", "value": f"{IMAGE_TOKEN}\n{q}"}, {"from": "gpt", "value": "red"}],
                               tok, "instruct")
        p = t.encode_prompt(q, tok)
        assert ids[:len(p)] == p and labels[len(p)] != IGNORE_INDEX and all(x == IGNORE_INDEX for x in labels[:len(p)])
    assert t.prompt(q).endswith({"phi": "ASSISTANT:", "plain_chat": "ASSISTANT:",
                                 "chatml": "<|im_start|>assistant\n"}[name])
    assert t.prompt(q).count(IMAGE_TOKEN) == 1 and t.prompt(q, image=False).count(IMAGE_TOKEN) == 0


def test_phi_format_matches_llava_phi(bpe_tok):
    ids, _ = get_template("phi").encode(CONV[:4], bpe_tok, "instruct")
    text = bpe_tok.decode(ids)
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant.")
    assert "questions. USER: <image>\nWhat color" in text
    assert "directly. ASSISTANT: B<|endoftext|>USER: Is there any text in the image? ASSISTANT: The text" in text
    chat = bpe_tok.decode(get_template("chatml").encode(CONV[:2], bpe_tok, "instruct")[0])
    assert chat.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>")
    assert chat.endswith("<|im_start|>assistant\nB<|im_end|>")


def test_template_errors(word_tok, bpe_tok):
    with pytest.raises(DataError, match="lm.template='vicuna'.*one of"):
        get_template("vicuna")
    with pytest.raises(DataError, match="stage='pretrain'"):
        get_template("phi").encode(CAPTION, word_tok, "pretrain")
    with pytest.raises(DataError, match="turn 1"):
        get_template("phi").encode([CAPTION[0], {"from": "bot", "value": "x"}], word_tok, "instruct")
    from transformers import PreTrainedTokenizerFast
    no_im_end = PreTrainedTokenizerFast(tokenizer_object=bpe_tok.backend_tokenizer, eos_token=EOS)
    no_im_end.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    bad = get_template("chatml").__class__("chatml", eot="<|not_a_token|>")
    with pytest.raises(DataError, match="needs the token '<\\|not_a_token\\|>'"):
        bad.encode(CAPTION, no_im_end, "instruct")


def test_word_tokenizer_is_deterministic_and_roundtrips(tmp_path, word_tok):
    from transformers import AutoTokenizer

    again = build_word_tokenizer()
    assert word_tok.get_vocab() == again.get_vocab()
    assert [word_tok.convert_tokens_to_ids(s) for s in (PAD, "[UNK]", EOS, IM_START, IM_END, IMAGE_TOKEN)] == list(range(6))
    assert word_tok.pad_token == PAD and word_tok.eos_token == EOS
    word_tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "<image>\nIs there a red circle in the image?"
    assert loaded(text).input_ids == word_tok(text).input_ids
    assert loaded.get_vocab() == word_tok.get_vocab() and loaded.pad_token_id == 0


def test_generated_data_has_no_unknown_words(tmp_path, word_tok):
    from ablate.data.synthetic import generate
    paths = generate({"root": str(tmp_path), "num_train": 60, "num_eval": 30})
    unk = word_tok.unk_token_id
    for f in (paths.align_json, paths.instruct_json, paths.eval_json):
        for rec in json.loads(f.read_text()):
            for turn in rec["conversations"]:
                assert unk not in word_tok(turn["value"]).input_ids, turn["value"]


def _cfg(weights, arch, checkpoint="microsoft/phi-2"):
    return OmegaConf.create({"scale": {"weights": weights, "arch": arch}, "lm": {"checkpoint": checkpoint}})


def test_build_tokenizer_local_and_pretrained_paths(tmp_path, bpe_tok):
    assert build_tokenizer(_cfg("random", "tiny")).get_vocab() == build_word_tokenizer().get_vocab()
    # a local checkpoint directory without <image> or a pad token: both get added
    from transformers import PreTrainedTokenizerFast
    plain = PreTrainedTokenizerFast(tokenizer_object=bpe_tok.backend_tokenizer, eos_token=EOS)
    plain.save_pretrained(tmp_path / "ckpt")
    for weights, arch in (("pretrained", "full"), ("random", "full")):
        tok = build_tokenizer(_cfg(weights, arch, str(tmp_path / "ckpt")))
        assert tok.convert_tokens_to_ids(IMAGE_TOKEN) != tok.unk_token_id
        assert tok(f"{IMAGE_TOKEN} hi", add_special_tokens=False).input_ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 1
        assert tok.pad_token == EOS


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"lm.checkpoint='.*/missing': no such directory.*Fix:"):
        build_tokenizer(_cfg("pretrained", "full", str(tmp_path / "missing")))
    # a hub id with no cache and no network (HF_HUB_OFFLINE=1 in conftest)
    with pytest.raises(DataError, match=r"lm.checkpoint='nobody/no-such-model': cannot load its tokenizer.*Fix"):
        build_tokenizer(_cfg("pretrained", "full", "nobody/no-such-model"))
    with pytest.raises(DataError, match="lm.checkpoint is not set"):
        build_tokenizer(_cfg("pretrained", "full", None))
    with pytest.raises(DataError, match="scale.weights='huge'"):
        build_tokenizer(_cfg("huge", "tiny"))
