"""MM-Vet grader interface: grades read from a file, or asked of an OpenAI-compatible chat endpoint.

MM-Vet scores an open-ended answer with an LLM judge that returns a number in [0, 1]. Two sources:
* `GradeFile`: the grade file the official MM-Vet grader writes ({"v1_0": {"score": [0.5, ...]}}, one
  score per run), or a flat {"v1_0": 0.5} map. This is how published numbers are reproduced.
* `EndpointJudge`: POSTs to `<base_url>/chat/completions` with plain HTTP (urllib), the key read from an
  environment variable named in the config (never from the config itself). Like the official grader it
  retries, with a higher temperature, until the reply is a number in [0, 1], and gives 0.0 after
  `max_tries`. Its default prompt is ablate's own few-shot prompt in the same spirit as MM-Vet's; grades
  are therefore not the official ones unless `prompt_file` holds the official prompt (with `{question}`,
  `{answer}` and `{prediction}` placeholders).
`make_judge` picks one and fails with a clear message when neither is available.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ablate.eval.records import EvalInputError, read_json

DEFAULT_PROMPT = """You grade answers to questions about images. Compare the model's answer with the \
ground truth and reply with one number between 0.0 and 1.0 and nothing else: 1.0 when the answer is fully \
correct, 0.0 when it is wrong, and a value in between for partly correct answers. In the ground truth, \
<AND> joins parts that must all be present and <OR> joins alternatives of which one is enough.

Question | Ground truth | Model answer | Grade
How many apples are on the plate? | 3 | There are three apples. | 1.0
What is written on the sign? | STOP | The sign says "SLOW". | 0.0
Which two colours is the flag? | red <AND> white | The flag is red. | 0.5
Where is the cat? | on the sofa <OR> on the couch | It sits on the couch. | 1.0
{question} | {answer} | {prediction} |"""

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Judge(Protocol):
    def grade(self, key: str, question: str, answer: str | None, prediction: str) -> list[float]:
        """Grades in [0, 1] for one answer, one per run."""


class JudgeUnavailable(EvalInputError):
    """MM-Vet was asked to score without a grade file or a usable endpoint."""


class GradeFile:
    """Grades written by the official MM-Vet grader (or a flat key -> grade map)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        doc = read_json(self.path)
        if not isinstance(doc, dict):
            raise EvalInputError(self.path, "expected an object {\"v1_0\": {\"score\": [...]}, ...}")
        self.grades: dict[str, list[float]] = {}
        for key, value in doc.items():
            scores = value.get("score") if isinstance(value, dict) else [value]
            if not isinstance(scores, list) or not scores or not all(isinstance(s, (int, float)) for s in scores):
                raise EvalInputError(self.path, f"entry {key!r} has no numeric 'score' list")
            self.grades[key] = [float(s) for s in scores]
        runs = {len(v) for v in self.grades.values()}
        if len(runs) > 1:
            raise EvalInputError(self.path, f"entries have different numbers of runs: {sorted(runs)}")

    def grade(self, key: str, question: str, answer: str | None, prediction: str) -> list[float]:
        if key not in self.grades:
            raise EvalInputError(self.path, f"no grade for {key!r}")
        return self.grades[key]


class EndpointJudge:
    """Grades from an OpenAI-compatible `/chat/completions` endpoint over plain HTTP."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", *,
                 temperature: float = 0.0, max_tries: int = 5, timeout_s: float = 60.0,
                 prompt_file: str | os.PathLike | None = None, max_tokens: int = 3):
        key = os.environ.get(api_key_env)
        if not key:
            raise JudgeUnavailable(None, f"MM-Vet judge: environment variable {api_key_env} (the API key) is not set")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self._key = model, key
        self.temperature, self.max_tries = temperature, max_tries
        self.timeout_s, self.max_tokens = timeout_s, max_tokens
        self.prompt = Path(prompt_file).read_text(encoding="utf-8") if prompt_file else DEFAULT_PROMPT

    def grade(self, key: str, question: str, answer: str | None, prediction: str) -> list[float]:
        if answer is None:
            raise EvalInputError(None, f"MM-Vet judge: no ground-truth answer for {key!r} (pass the mm-vet.json gt)")
        # str.replace, not str.format: answers contain braces.
        prompt = (self.prompt.replace("{question}", question).replace("{answer}", answer.replace("<AND>", " <AND> ")
                  .replace("<OR>", " <OR> ")).replace("{prediction}", prediction))
        temperature = self.temperature
        for _ in range(self.max_tries):
            value = _first_number(self._ask(prompt, temperature))
            if value is not None and 0.0 <= value <= 1.0:
                return [value]
            temperature += 0.5  # the official grader also samples more freely after an unusable reply
        return [0.0]

    def _ask(self, prompt: str, temperature: float) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": temperature, "max_tokens": self.max_tokens}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self._key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise JudgeUnavailable(None, f"MM-Vet judge: {self.url} answered HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            raise JudgeUnavailable(None, f"MM-Vet judge: cannot reach {self.url} ({e})") from None
        try:
            return str(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailable(None, f"MM-Vet judge: {self.url} reply has no choices[0].message.content") from None


def _first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    return float(m.group(0)) if m else None


def make_judge(grades: str | os.PathLike | None = None, endpoint: Mapping | None = None) -> Judge:
    """A grade file if given, else an endpoint judge from config keys (base_url, model, api_key_env, ...)."""
    if grades is not None:
        return GradeFile(grades)
    if endpoint and endpoint.get("base_url") and endpoint.get("model"):
        opts = {k: endpoint[k] for k in ("temperature", "max_tries", "timeout_s", "prompt_file", "max_tokens")
                if endpoint.get(k) is not None}
        return EndpointJudge(endpoint["base_url"], endpoint["model"], endpoint.get("api_key_env") or "OPENAI_API_KEY",
                             **opts)
    raise JudgeUnavailable(None, "MM-Vet needs a judge: pass a grade file (--grades, the official grader's "
                                 "*_gpt-4-grade-*.json) or configure an endpoint (base_url, model, api_key_env)")
