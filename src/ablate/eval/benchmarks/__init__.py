"""Benchmark registry: name -> benchmark class, for the paper's benchmarks and their synthetic stand-ins.

    >>> bench = get_benchmark("pope")
    >>> bench.prompt_suffix
    '\\nAnswer the question using a single word or phrase.'
"""
from __future__ import annotations

from ablate.eval.benchmarks.base import Benchmark, Question
from ablate.eval.benchmarks.gqa import GQA
from ablate.eval.benchmarks.mmbench import MMBench, MMBenchCN
from ablate.eval.benchmarks.mme import MME
from ablate.eval.benchmarks.mmvet import MMVet
from ablate.eval.benchmarks.pope import POPE
from ablate.eval.benchmarks.scienceqa import ScienceQA
from ablate.eval.benchmarks.seed import SEED
from ablate.eval.benchmarks.synthetic import SynthMMB, SynthPOPE, SynthText, SynthVQA
from ablate.eval.benchmarks.textvqa import TextVQA
from ablate.eval.benchmarks.vizwiz import VizWiz
from ablate.eval.benchmarks.vqav2 import VQAv2
from ablate.eval.records import EvalInputError

BENCHMARKS: dict[str, type[Benchmark]] = {cls.name: cls for cls in (
    VQAv2, GQA, VizWiz, ScienceQA, TextVQA, POPE, MME, MMBench, MMBenchCN, SEED, MMVet,
    SynthVQA, SynthPOPE, SynthMMB, SynthText,
)}


def get_benchmark(name: str, **kwargs) -> Benchmark:
    """A fresh benchmark instance by registry name (kwargs go to the constructor, e.g. MM-Vet's judge)."""
    cls = BENCHMARKS.get(name)
    if cls is None:
        raise EvalInputError(None, f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return cls(**kwargs)


__all__ = ["BENCHMARKS", "Benchmark", "Question", "get_benchmark"]
