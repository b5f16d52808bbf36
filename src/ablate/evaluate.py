"""Command line for scoring a benchmark's answers file: `python -m ablate.evaluate BENCHMARK --answers FILE`.

Reads the benchmark's questions (from `--root`, an eval root laid out like LLaVA's playground/data/eval,
or from explicit `--questions/--gt/--images`), checks that the answers cover the questions exactly,
scores them as the official tool does and prints the metrics (`--json` for machine reading). `--out`
writes one JSON line per question; `--submission` writes the file an evaluation server expects. Bad
input exits with status 2 and one line naming the file, the line and the problem.

    python -m ablate.evaluate pope --root playground/data/eval --answers answers/pope.jsonl --json
    python -m ablate.evaluate mmvet --root playground/data/eval --answers mmvet.jsonl --grades grade.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ablate.eval.benchmarks import BENCHMARKS, get_benchmark
from ablate.eval.records import EvalInputError, write_jsonl


def evaluate(benchmark: str, answers: str | os.PathLike, *, root=None, questions=None, gt=None, images=None,
             grades=None, judge: dict | None = None, out=None, submission=None) -> dict:
    """Score one answers file; returns {"benchmark", "metrics", "n_questions", "out", "submission"}.

    `metrics` is None when the benchmark has no local ground truth (a test split scored by a server);
    then only the submission file is written.
    """
    kwargs = {}
    if benchmark == "mmvet" and (grades is not None or judge):
        from ablate.eval.judge import make_judge

        kwargs["judge"] = make_judge(grades=grades, endpoint=judge)
    bench = get_benchmark(benchmark, **kwargs)
    qs = bench.load(root, questions=questions, gt=gt, images=images)
    predictions = bench.read_answers(answers, qs)
    result = {"benchmark": benchmark, "n_questions": len(qs), "metrics": None, "out": None, "submission": None}
    if submission is not None:
        if not hasattr(bench, "write_submission"):
            raise EvalInputError(None, f"{benchmark} has no submission format (it is scored locally)")
        result["submission"] = str(bench.write_submission(qs, predictions, submission))
    if bench.can_score(qs) or submission is None:
        # Without a submission there is nothing else to do, so let scoring say what is missing.
        metrics, rows = bench.score(qs, predictions)
        result["metrics"] = metrics
        if out is not None:
            result["out"] = str(write_jsonl(out, rows))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="BENCHMARK",
                    help="one of: " + ", ".join(sorted(BENCHMARKS)))
    ap.add_argument("--answers", required=True, help="answers file (.jsonl, .json, or an MMBench .xlsx/.tsv)")
    ap.add_argument("--root", help="eval root laid out like LLaVA's playground/data/eval (or a synthetic suite root)")
    ap.add_argument("--questions", help="question file (overrides the one under --root)")
    ap.add_argument("--gt", help="ground-truth file or directory (overrides the one under --root)")
    ap.add_argument("--images", help="image folder (overrides the one under --root)")
    ap.add_argument("--grades", help="MM-Vet: grade file written by the official grader")
    ap.add_argument("--judge-url", help="MM-Vet: OpenAI-compatible base URL (…/v1) of a judge endpoint")
    ap.add_argument("--judge-model", help="MM-Vet: judge model name")
    ap.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="MM-Vet: env variable holding the API key")
    ap.add_argument("--out", help="write per-question scores here (JSON lines)")
    ap.add_argument("--submission", help="write the evaluation server's upload file here")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    judge = None
    if args.judge_url or args.judge_model:
        judge = {"base_url": args.judge_url, "model": args.judge_model, "api_key_env": args.judge_key_env}
    try:
        result = evaluate(args.benchmark, args.answers, root=args.root, questions=args.questions, gt=args.gt,
                          images=args.images, grades=args.grades, judge=judge, out=args.out,
                          submission=args.submission)
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{result['benchmark']}: {result['n_questions']} questions")
    if result["metrics"] is None:
        print("  no local ground truth: scored by the evaluation server")
    else:
        width = max(len(k) for k in result["metrics"])
        for key in sorted(result["metrics"], key=lambda k: ("/" in k, k)):
            print(f"  {key:<{width}}  {result['metrics'][key]:.2f}")
    for what in ("out", "submission"):
        if result[what]:
            print(f"  wrote {what}: {result[what]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
