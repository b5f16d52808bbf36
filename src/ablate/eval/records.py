"""Reading and writing evaluation records: question/answer JSON lines, JSON, TSV/XLSX, with located errors.

Every reader raises `EvalInputError` naming the file, the line (when there is one) and the problem, so a
bad answers file is fixed in one look. Every writer is atomic: it writes a temporary file next to the
target and `os.replace`s it, so a crash never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class EvalInputError(ValueError):
    """Bad evaluation input: the message names the file, the line and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        where = self.path
        if where is not None and line is not None:
            where = f"{where}:{line}"
        super().__init__(problem if where is None else f"{where}: {problem}")


def _require_file(path: str | os.PathLike, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(p, f"{what} not found" if not p.exists() else f"{what} is not a regular file")
    return p


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """All records of a JSON-lines file as (line number, object); blank lines are skipped."""
    p = _require_file(path)
    rows = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalInputError(p, f"malformed JSON ({e.msg} at column {e.colno})", lineno) from None
            if not isinstance(obj, dict):
                raise EvalInputError(p, f"expected a JSON object, got {type(obj).__name__}", lineno)
            rows.append((lineno, obj))
    return rows


def read_json(path: str | os.PathLike) -> Any:
    """A whole JSON document; a syntax error is reported at its line."""
    p = _require_file(path)
    try:
        with p.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EvalInputError(p, f"malformed JSON ({e.msg} at column {e.colno})", e.lineno) from None


def read_table(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """Rows of a TSV or XLSX table (MMBench layout) as (line number, row dict); NaN cells become None.

    Line numbers are the file's own: the header is line 1, so the first row is line 2.
    """
    import pandas as pd  # imported here: only the MMBench-style benchmarks need it

    p = _require_file(path)
    try:
        if p.suffix.lower() in (".xlsx", ".xls"):
            df = pd.read_excel(p)
        else:
            # pandas' default NA strings on purpose: LLaVA and the MMBench tools read the TSV the same way,
            # so an option cell reading "None" is absent for them too.
            df = pd.read_csv(p, sep="\t")
    except Exception as e:  # pandas raises many types; all mean "this is not a readable table"
        raise EvalInputError(p, f"cannot read table ({type(e).__name__}: {e})") from None
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        rows.append((i + 2, {k: (None if _is_missing(v) else v) for k, v in rec.items()}))
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Answer:
    """One model answer as read from a file: its raw text and where it came from."""

    text: str
    line: int | None
    record: dict


def default_key(record: dict) -> str:
    return str(record["question_id"])


def read_answers(path: str | os.PathLike, key: Callable[[dict], str] = default_key) -> dict[str, Answer]:
    """Answers keyed by question id, from any of the answer layouts the official tools use.

    * `.jsonl`: LLaVA answers (`question_id`, `text`) or upload lines (`question_id`, `prediction`);
    * `.json`: a list of such records, or an id -> text map (MM-Vet's results file);
    * `.xlsx`/`.tsv`: an MMBench upload table (`index`, `prediction`).
    `key` maps a record to the benchmark's question id (some benchmarks need the prompt to tell apart
    two questions that share an image id).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".xlsx", ".xls", ".tsv"):
        records = [(ln, {"question_id": _table_id(r.get("index")), "prediction": r.get("prediction"), **r})
                   for ln, r in read_table(p)]
    elif suffix == ".json":
        doc = read_json(p)
        if isinstance(doc, dict):
            records = [(None, {"question_id": k, "text": v}) for k, v in doc.items()]
        elif isinstance(doc, list):
            records = [(None, r) for r in doc]
        else:
            raise EvalInputError(p, "expected a JSON list of answers or an id -> answer object")
    else:
        records = read_jsonl(p)
    answers: dict[str, Answer] = {}
    for lineno, rec in records:
        where = lineno if lineno is not None else None
        if not isinstance(rec, dict) or rec.get("question_id") is None:
            raise EvalInputError(p, "answer record has no question_id", where)
        text = rec.get("text", rec.get("prediction"))
        if text is None or (isinstance(text, float) and math.isnan(text)):
            raise EvalInputError(p, f"answer for question {rec['question_id']!r} has no 'text' or "
                                    "'prediction'", where)
        try:
            k = key(rec)
        except (KeyError, ValueError) as e:
            raise EvalInputError(p, f"cannot identify the question of this answer ({e})", where) from None
        if k in answers:
            first = answers[k].line
            raise EvalInputError(p, f"duplicate answer for question {k!r}" +
                                 (f" (first at line {first})" if first else ""), where)
        answers[k] = Answer(str(text), where, rec)
    return answers


def _table_id(value: Any) -> Any:
    # Excel hands back 241.0 for an integer column with gaps; ids are compared as strings.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_coverage(answers: dict[str, Answer], question_ids: Iterable[str], path: str | os.PathLike,
                   allow_extra: bool = False) -> None:
    """Every question has an answer, and (unless allowed) every answer belongs to a question."""
    ids = list(question_ids)
    missing = [q for q in ids if q not in answers]
    if missing:
        shown = ", ".join(repr(q) for q in missing[:5])
        raise EvalInputError(path, f"no answer for {len(missing)} of {len(ids)} questions (first: {shown})")
    if not allow_extra:
        known = set(ids)
        for k, ans in answers.items():
            if k not in known:
                raise EvalInputError(path, f"answer for unknown question {k!r}", ans.line)


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        # Leave nothing behind that could be mistaken for a finished file.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write JSON lines atomically."""
    def _write(f):
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return _atomic_write(path, _write)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write one JSON document atomically."""
    return _atomic_write(path, lambda f: json.dump(obj, f, ensure_ascii=False, indent=indent))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    return _atomic_write(path, lambda f: f.write(text))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a binary file atomically."""
    return _atomic_write(path, lambda f: f.write(data), mode="wb")
