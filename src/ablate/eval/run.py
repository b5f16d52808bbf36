"""Evaluate a trained cell: generate answers for each configured benchmark, score, cache, save per question.

Results are cached per (weights, benchmark, questions, prompt, decoding settings): re-running a cell does not
re-evaluate, and any changed setting misses the cache instead of being served a stale result.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
import logging
import re
from pathlib import Path

from omegaconf import DictConfig

from ablate import cell as C

log = logging.getLogger("ablate")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def exact_match_questions(eval_json: str):
    """The held-out synthetic QA (LLaVA conversation format) as benchmark questions scored by exact match."""
    from ablate.eval.benchmarks.base import Question

    out = []
    for rec in json.loads(Path(eval_json).read_text()):
        human, gpt = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        out.append(Question(question_id=str(rec["id"]), image=str(Path(eval_json).parent / rec["image"]),
                            prompt=human.replace("<image>", "").strip(), refs=gpt,
                            meta={"type": rec.get("type")}))
    return out


class ExactMatch:
    """The minimal built-in benchmark: held-out synthetic questions, exact match after lower-casing.

    `blind_accuracy` is what answering every question with its type's most frequent answer scores: about the best
    a model that ignores the image can do (colours, shapes and positions are drawn independently of the question
    wording). `accuracy` above it means the cell uses the image; `accuracy_<type>` against `blind_<type>` shows
    where.
    """
    name = "synth_qa"
    prompt_suffix = ""
    version = 2   # 2: blind_accuracy added (part of the eval cache key, so older cached metrics are recomputed)

    def score(self, questions, predictions):
        rows = [{"question_id": q.question_id, "prediction": predictions[q.question_id], "answer": q.refs,
                 "score": float(_norm(predictions[q.question_id]) == _norm(q.refs)), **q.meta} for q in questions]
        metrics = {"accuracy": 100.0 * sum(r["score"] for r in rows) / max(1, len(rows))}
        by_type: dict[str, list[float]] = {}
        for r in rows:
            by_type.setdefault(str(r.get("type")), []).append(r["score"])
        metrics.update({f"accuracy_{t}": 100.0 * sum(v) / len(v) for t, v in sorted(by_type.items())})
        answers_by_type: dict[str, Counter] = {}
        for r in rows:
            answers_by_type.setdefault(str(r.get("type")), Counter())[_norm(r["answer"])] += 1
        blind = {t: c.most_common(1)[0][1] for t, c in answers_by_type.items()}
        metrics["blind_accuracy"] = 100.0 * sum(blind.values()) / max(1, len(rows))
        metrics.update({f"blind_{t}": 100.0 * n / sum(answers_by_type[t].values()) for t, n in sorted(blind.items())})
        return metrics, rows


def _load(name: str, cfg: DictConfig, data: dict):
    """(benchmark, questions, questions-file digest) for a benchmark name."""
    from ablate.eval.benchmarks import get_benchmark

    if name == "synth_qa":
        return ExactMatch(), exact_match_questions(data["eval_json"]), file_digest(Path(data["eval_json"]))
    kwargs = {}
    if name == "mmvet":
        from ablate.eval.judge import make_judge

        judge = cfg.eval.get("judge") or {}
        kwargs["judge"] = make_judge(grades=judge.get("grades"), endpoint=judge)
    bench = get_benchmark(name, **kwargs)
    if name.startswith("synth_"):
        root = suite_root(cfg, data)
    else:
        root = Path(str(cfg.eval.root)).expanduser()
    questions = bench.load(root=root)
    qfile = bench.paths(root)["questions"]
    return bench, questions, file_digest(qfile)


def suite_root(cfg: DictConfig, data: dict) -> Path:
    """The synthetic benchmark suite of this synthetic dataset, built once (under a lock) and then reused."""
    from ablate.eval.synthetic_suite import build_suite
    from ablate.run import file_lock

    syn = Path(data["eval_scenes"]).parent
    root = syn / f"suite-{int(cfg.eval.get('suite_seed', 0))}"
    with file_lock(syn / ".suite.lock"):
        if not (root / "COMPLETE").exists():
            build_suite(syn, root, seed=int(cfg.eval.get("suite_seed", 0)))
            (root / "COMPLETE").write_text("ok\n")
    return root


def evaluate_cell(vlm, tokenizer, cfg: DictConfig, cdir: Path, data: dict) -> tuple[dict, dict]:
    """Run every benchmark of cfg.eval; return (metrics as eval/<bench>/<metric>, per-question file paths)."""
    from ablate.data.conversation import get_template
    from ablate.data.image import preprocess_image
    from ablate.eval.generate import Request, generate_answers

    ev = cfg.eval
    template = get_template(cfg.lm.template)
    weights = file_digest(cdir / "stage2" / "weights.pt")
    res, mean, std = int(cfg.resolution), list(cfg.encoder.image_mean), list(cfg.encoder.image_std)

    def load_image(image):   # a path, or a decoded image (MMBench-style TSVs)
        return preprocess_image(image, res, mean, std)

    metrics, per_question = {}, {}
    device = "cuda" if _cuda() else "cpu"
    vlm.to(device)
    for name in ev.benchmarks:
        bench, questions, qdigest = _load(name, cfg, data)
        limit = ev.get("max_questions")
        if limit:
            questions = questions[: int(limit)]
        key = C._digest({"weights": weights, "bench": name, "questions": qdigest, "n": len(questions),
                         "suffix": getattr(bench, "prompt_suffix", ""), "template": template.name,
                         "max_new_tokens": int(ev.max_new_tokens), "decoding": "greedy",
                         "resolution": res, **({"scoring": bench.version} if getattr(bench, "version", 1) != 1
                                               else {})}, 24)
        cache, rows_path = cdir / "eval" / f"{name}.cache.json", cdir / "eval" / f"{name}.jsonl"
        cached = C.read_json(cache) if cache.exists() else None
        if cached and cached.get("key") == key and rows_path.exists():
            log.info("eval %s: cached (%s)", name, cache)
            bench_metrics = cached["metrics"]
        else:
            log.info("eval %s: %d questions (cache key %s%s)", name, len(questions), key,
                     f", was {cached.get('key')}" if cached else "")
            requests = [Request(q.question_id, q.prompt, q.image) for q in questions]
            preds = generate_answers(vlm, tokenizer, template, requests, load_image,
                                     batch_size=int(ev.batch_size), max_new_tokens=int(ev.max_new_tokens),
                                     progress=True)
            bench_metrics, rows = bench.score(questions, preds)
            C.atomic_write_text(rows_path, "".join(json.dumps(r, default=str) + "\n" for r in rows))
            C.write_json(cache, {"key": key, "metrics": bench_metrics})   # written last: marks the result done
        log.info("eval %s: %s", name, ", ".join(f"{k}={v:.2f}" for k, v in bench_metrics.items()
                                                 if isinstance(v, (int, float))))
        metrics.update({f"eval/{name}/{k}": v for k, v in bench_metrics.items() if isinstance(v, (int, float))})
        per_question[name] = str(rows_path.relative_to(cdir))
    return metrics, per_question


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()
