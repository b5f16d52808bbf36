"""Tokenizers: a word-level tokenizer built locally for tiny models, or the language model's own.

At ``scale.weights=random`` with ``scale.arch=tiny`` nothing is downloaded: the vocabulary is every word and
punctuation mark the synthetic generator, the conversation templates and LLaVA's benchmark prompts can emit,
plus letters, digits and the special tokens. Ids are deterministic (special tokens first, then sorted words),
so two runs build the same tokenizer and a tiny LM's embedding rows mean the same thing everywhere.
Otherwise the checkpoint's tokenizer is loaded and ``<image>`` is added to it. Both save with
``save_pretrained`` and load back with ``AutoTokenizer.from_pretrained``.
"""
from __future__ import annotations

import os
import string
from collections.abc import Iterable

from ablate.data import IMAGE_TOKEN, DataError

PAD, UNK, EOS, IM_START, IM_END = "<pad>", "[UNK]", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, UNK, EOS, IM_START, IM_END, IMAGE_TOKEN]   # ids 0..5 of the word-level tokenizer

# Suffixes and framing words of LLaVA-1.5's evaluation prompts (VQAv2/GQA/POPE/TextVQA, VizWiz,
# ScienceQA/MMBench/SEED, MME), so benchmark prompts built from the synthetic scenes hit few [UNK]s.
BENCHMARK_STRINGS = [
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Please answer yes or no.",
    "Reference OCR token:",
    "Question: Options: Hint: Context: Answer: Image:",
    "Is there a in the image? Are there any Which of the following What is the color of How many are",
    "Please describe this image in detail. What is written in the image? What does the text say?",
    "object objects shape shapes colour color picture photo number count position located where the this "
    "that it of on in at to with one two three four five large small big tiny left right top bottom center "
    "middle corner word words letter letters character characters text above below next visible",
]


def _pre_tokenizer():
    from tokenizers import pre_tokenizers
    # split on whitespace, then isolate every punctuation character: "option's" -> option ' s, "K7?" -> K7 ?
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def word_vocab(extra_texts: Iterable[str] = ()) -> list[str]:
    """The sorted word list of the local tokenizer (special tokens excluded)."""
    from ablate.data.conversation import fixed_strings
    from ablate.data.synthetic import corpus_strings

    texts = corpus_strings() + fixed_strings() + BENCHMARK_STRINGS + list(extra_texts)
    for s in SPECIAL_TOKENS:
        texts = [t.replace(s, " ") for t in texts]
    pre = _pre_tokenizer()
    words = {w for t in texts for w, _ in pre.pre_tokenize_str(t)}
    # capitalised and lower-case variants: sentence starts and option lists change case
    words |= {w.lower() for w in words} | {w.capitalize() for w in words}
    words |= set(string.ascii_letters) | set(string.digits) | set(string.punctuation)
    words |= {str(i) for i in range(100)}
    return sorted(words - set(SPECIAL_TOKENS))


def build_word_tokenizer(extra_texts: Iterable[str] = ()):
    """A PreTrainedTokenizerFast with a WordLevel model over ``word_vocab``; unknown words map to [UNK]."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + word_vocab(extra_texts))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = _pre_tokenizer()
    # WordPiece's decoder joins words with spaces and, with cleanup, removes the space before punctuation;
    # no word starts with "##", so nothing else changes
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, pad_token=PAD, eos_token=EOS,
        additional_special_tokens=[IM_START, IM_END, IMAGE_TOKEN], model_max_length=1 << 20)


def _looks_local(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(checkpoint))


def load_pretrained_tokenizer(checkpoint: str):
    """The checkpoint's tokenizer plus ``<image>`` as a special token, and a pad token where it has none."""
    from transformers import AutoTokenizer

    fix = (f"Fix: download it first (huggingface-cli download {checkpoint}) and/or point lm.checkpoint at a local "
           f"copy; for an offline smoke test use scale=tiny.")
    path = os.path.expanduser(checkpoint)
    if _looks_local(checkpoint) and not os.path.isdir(path):
        raise DataError(f"lm.checkpoint={checkpoint!r}: no such directory. {fix}")
    try:
        tok = AutoTokenizer.from_pretrained(path if _looks_local(checkpoint) else checkpoint)
    except (OSError, ValueError) as e:   # OSError: not found / offline; ValueError: bad repo id or files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"lm.checkpoint={checkpoint!r}: cannot load its tokenizer "
                        f"({type(e).__name__}: {first}). {fix}") from e
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_additional_special_tokens=False)
    if tok.pad_token is None:
        # LLaVA's choice for models without pad: padding positions are masked anyway
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def build_tokenizer(cfg, extra_texts: Iterable[str] = ()):
    """The tokenizer of a cell: local word-level at random/tiny, else the LM checkpoint's (plus ``<image>``).
    ``extra_texts``: more strings whose words the local vocabulary must cover (e.g. new benchmark prompts)."""
    weights, arch = cfg.scale.weights, cfg.scale.arch
    if weights not in ("random", "pretrained") or arch not in ("tiny", "full"):
        raise DataError(f"scale.weights={weights!r}, scale.arch={arch!r}: expected weights random|pretrained and "
                        f"arch tiny|full. Fix: use scale=tiny, scale=paper or scale=full_random.")
    if weights == "random" and arch == "tiny":
        return build_word_tokenizer(extra_texts)
    checkpoint = cfg.lm.get("checkpoint")
    if not checkpoint:
        raise DataError(f"lm.checkpoint is not set (lm={cfg.lm.get('name')!r}) but scale.weights={weights!r}, "
                        f"scale.arch={arch!r} need the LM's tokenizer. Fix: set lm.checkpoint, or use scale=tiny.")
    return load_pretrained_tokenizer(str(checkpoint))
