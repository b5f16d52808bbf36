"""The synthetic benchmarks: the official benchmark classes pointed at files the synthetic suite writes.

Each class only renames a paper benchmark and sets its file layout under a suite root (see
`ablate.eval.synthetic_suite.build_suite`), so tiny-scale cells are scored by exactly the code that
scores the real benchmarks: VQA accuracy, POPE parsing and F1, MMBench CircularEval, TextVQA accuracy.
"""
from __future__ import annotations

from ablate.eval.benchmarks.mmbench import MMBench
from ablate.eval.benchmarks.pope import POPE
from ablate.eval.benchmarks.textvqa import TextVQA
from ablate.eval.benchmarks.vqav2 import VQAv2

# File layout under a suite root; the suite writer and the loaders both read these.
SYNTH_LAYOUTS: dict[str, dict[str, str]] = {
    "synth_vqa": {"questions": "synth_vqa/questions.jsonl", "gt": "synth_vqa/annotations.json",
                  "images": "synth_vqa"},
    "synth_pope": {"questions": "synth_pope/questions.jsonl", "gt": "synth_pope/labels", "images": "synth_pope"},
    "synth_mmb": {"questions": "synth_mmb/synth_mmb.tsv"},
    "synth_text": {"questions": "synth_text/questions.jsonl", "gt": "synth_text/annotations.json",
                   "images": "synth_text"},
}


class SynthVQA(VQAv2):
    name = "synth_vqa"
    layout = SYNTH_LAYOUTS["synth_vqa"]


class SynthPOPE(POPE):
    name = "synth_pope"
    layout = SYNTH_LAYOUTS["synth_pope"]


class SynthMMB(MMBench):
    name = "synth_mmb"
    layout = SYNTH_LAYOUTS["synth_mmb"]


class SynthText(TextVQA):
    name = "synth_text"
    layout = SYNTH_LAYOUTS["synth_text"]
