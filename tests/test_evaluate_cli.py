"""The evaluate CLI, bad-input errors and atomic writes, the MM-Vet judge over HTTP, and the synthetic suite."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ablate.eval.benchmarks import get_benchmark
from ablate.eval.judge import EndpointJudge, JudgeUnavailable, make_judge
from ablate.eval.records import EvalInputError, read_answers, write_jsonl
from ablate.eval.synthetic_suite import build_suite
from ablate.evaluate import main

REPO = Path(__file__).resolve().parents[1]
COLORS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle", "diamond"]
SCENES = [  # (objects as (colour, shape), rendered text)
    ([("red", "circle"), ("blue", "square")], "K7"),
    ([("green", "triangle")], None),
    ([("red", "circle"), ("yellow", "diamond"), ("blue", "triangle")], "A3"),
    ([("red", "circle"), ("blue", "square"), ("purple", "circle")], "Z9"),
]


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    """Hand-written eval scenes with small PNGs, in the generator's layout (no dependency on it)."""
    root = tmp_path / "synthetic"
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (objects, text) in enumerate(SCENES):
        sid = f"eval-{i:06d}"
        img = Image.new("RGB", (32, 32), "white")
        draw = ImageDraw.Draw(img)
        for j, (colour, _) in enumerate(objects):
            draw.ellipse((2 + 9 * j, 2, 9 + 9 * j, 9), fill=colour)
        if text:
            draw.text((2, 18), text, fill="black")
        img.save(root / "images" / f"{sid}.png")
        lines.append({"scene_id": sid, "image": f"images/{sid}.png", "size": 32, "text": text, "text_px": 7,
                      "objects": [{"shape": s, "color": c, "cx": 5, "cy": 5, "r": 3, "size": "small",
                                   "position": "left"} for c, s in objects]})
    (root / "eval_scenes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def build(synthetic_root, out, seed=0):
    return build_suite(synthetic_root, out, seed, colors=COLORS, shapes=SHAPES)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_suite_is_deterministic_and_seeded(synthetic_root, tmp_path):
    build(synthetic_root, tmp_path / "a")
    build(synthetic_root, tmp_path / "b")
    build(synthetic_root, tmp_path / "c", seed=1)
    a, b, c = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert a == b and set(a) == set(c) and a != c
    assert not any(".tmp" in name for name in a)


def gold_answers(bench, qs) -> dict[str, str]:
    if bench.name == "synth_mmb":
        return {q.question_id: q.refs["answer"] for q in qs}
    if bench.name == "synth_pope":
        return {q.question_id: q.refs.capitalize() for q in qs}
    return {q.question_id: max(set(q.refs), key=q.refs.count) for q in qs}   # the majority reference


@pytest.mark.parametrize("name, metric", [("synth_vqa", "accuracy"), ("synth_pope", "f1"),
                                          ("synth_mmb", "accuracy"), ("synth_text", "accuracy")])
def test_every_synthetic_benchmark_scores_gold_answers_100(synthetic_root, tmp_path, name, metric):
    build(synthetic_root, tmp_path / "suite")
    bench = get_benchmark(name)
    qs = bench.load(tmp_path / "suite")
    assert qs and all(q.image is not None for q in qs)
    if isinstance(qs[0].image, str):
        assert all(Path(q.image).is_file() for q in qs)
    metrics, rows = bench.score(qs, gold_answers(bench, qs))
    assert metrics[metric] == pytest.approx(100.0) and len(rows) == len(qs)


def test_synthetic_contents(synthetic_root, tmp_path):
    build(synthetic_root, tmp_path / "suite")
    vqa = get_benchmark("synth_vqa").load(tmp_path / "suite")
    assert all(len(q.refs) == 10 for q in vqa)
    count_q = [q for q in vqa if q.prompt.startswith("How many")]
    assert [max(set(q.refs), key=q.refs.count) for q in count_q] == ["2", "1", "3", "3"]
    pope = get_benchmark("synth_pope").load(tmp_path / "suite")
    scene_of = {q.question_id: int(Path(q.image).stem.split("-")[1]) for q in pope}
    for q in pope:
        obj = q.prompt.split("Is there a ")[1].split(" in the image?")[0]
        present = {f"{c} {s}" for c, s in SCENES[scene_of[q.question_id]][0]}
        assert (obj in present) == (q.refs == "yes")
    # popular: "red circle" (in 3 scenes) is the most frequent object, so scene 1 (without it) is asked about it
    def negatives(split, scene):
        return {q.prompt.split(" in the image?")[0][len("Is there a "):] for q in pope
                if q.meta["split"] == split and scene_of[q.question_id] == scene and q.refs == "no"}

    assert negatives("popular", 1) == {"red circle"}
    # adversarial: scene 0 (red circle, blue square) is asked about objects that co-occur with them elsewhere
    assert negatives("adversarial", 0) == {"blue triangle", "purple circle"}
    mmb = get_benchmark("synth_mmb").load(tmp_path / "suite")
    groups = {}
    for q in mmb:
        groups.setdefault(q.meta["index"] % 1_000_000, []).append(q.refs["answer"])
    assert len(groups) == 4 and all(sorted(v) == ["A", "B", "C", "D"] for v in groups.values())
    text = get_benchmark("synth_text").load(tmp_path / "suite")
    assert sorted(q.refs[0] for q in text) == ["A3", "K7", "Z9"]


def test_bad_scene_record_names_file_and_line(synthetic_root, tmp_path):
    path = synthetic_root / "eval_scenes.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"scene_id": "x", "image": "images/missing.png", "objects": []})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalInputError, match=r"eval_scenes.jsonl:3: image 'images/missing.png' not found"):
        build(synthetic_root, tmp_path / "suite")


def write_answers(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def vqa_suite(synthetic_root, tmp_path):
    build(synthetic_root, tmp_path / "suite")
    qs = get_benchmark("synth_vqa").load(tmp_path / "suite")
    return tmp_path / "suite", [{"question_id": int(q.question_id), "text": q.refs[0]} for q in qs]


def test_cli_scores_the_synthetic_suite_in_a_subprocess(vqa_suite, tmp_path):
    suite, answers = vqa_suite
    answers[0]["text"] = "no idea"
    write_answers(tmp_path / "a.jsonl", answers)
    proc = subprocess.run([sys.executable, "-m", "ablate.evaluate", "synth_vqa", "--root", str(suite), "--answers",
                           str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "per_q.jsonl"), "--json"],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["metrics"]["accuracy"] == pytest.approx(100 * (len(answers) - 1) / len(answers))
    rows = [json.loads(x) for x in (tmp_path / "per_q.jsonl").read_text().splitlines()]
    assert len(rows) == len(answers) and rows[0]["score"] == 0.0 and rows[0]["prediction"] == "no idea"


def test_cli_human_output(vqa_suite, tmp_path, capsys):
    suite, answers = vqa_suite
    path = write_answers(tmp_path / "a.jsonl", answers)
    assert main(["synth_vqa", "--root", str(suite), "--answers", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"synth_vqa: {len(answers)} questions") and "accuracy" in out and "100.00" in out


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a[:-1], r"a.jsonl: no answer for 1 of \d+ questions \(first: '\d+'\)"),
    (lambda a: a + [a[0]], r"a.jsonl:\d+: duplicate answer for question '0' \(first at line 1\)"),
    (lambda a: a[:2] + ['{"question_id": 5, "text": "x"'] + a[2:], r"a.jsonl:3: malformed JSON"),
    (lambda a: a + [{"question_id": 999999, "text": "x"}], r"a.jsonl:\d+: answer for unknown question '999999'"),
    (lambda a: [{"text": "x"}] + a, r"a.jsonl:1: answer record has no question_id"),
    (lambda a: [{"question_id": 0}] + a[1:], r"a.jsonl:1: answer for question 0 has no 'text' or 'prediction'"),
])
def test_bad_answers_give_one_clear_error_and_no_output(vqa_suite, tmp_path, capsys, mutate, message):
    suite, answers = vqa_suite
    path = write_answers(tmp_path / "a.jsonl", mutate(answers))
    out = tmp_path / "per_q.jsonl"
    assert main(["synth_vqa", "--root", str(suite), "--answers", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")   # one line, no traceback
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


def test_missing_benchmark_file_is_named(tmp_path, capsys):
    assert main(["pope", "--root", str(tmp_path), "--answers", str(tmp_path / "a.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'pope/llava_pope_test.jsonl'}: file not found"


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "rows.jsonl"
    write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == '{"a": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_answers_in_other_layouts(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"v1_0": "an answer"}))
    assert read_answers(tmp_path / "r.json")["v1_0"].text == "an answer"
    (tmp_path / "bad.json").write_text('{"v1_0": "x",\n "v1_1": }')
    with pytest.raises(EvalInputError, match=r"bad.json:2: malformed JSON"):
        read_answers(tmp_path / "bad.json")


class _FakeChat(BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeChat.seen.append({"auth": self.headers["Authorization"], **body})
        out = json.dumps({"choices": [{"message": {"content": _FakeChat.replies.pop(0)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_endpoint_judge_over_http_retries_until_a_grade_in_range(tmp_path, monkeypatch):
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"question_id": i, "image": f"v1_{i}.png", "text": f"Q{i}?"}) + "\n"
                         for i in range(2)))
    gt = tmp_path / "mm-vet.json"
    gt.write_text(json.dumps({"v1_0": {"answer": "3"}, "v1_1": {"answer": "red<AND>white"}}))
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
        _FakeChat.replies[:] = ["1.0", "grade: 7", "0.4"]   # the out-of-range reply is asked again
        judge = make_judge(endpoint={"base_url": f"http://127.0.0.1:{server.server_port}/v1", "model": "m",
                                     "api_key_env": "TEST_JUDGE_KEY"})
        bench = get_benchmark("mmvet", judge=judge)
        m, _ = bench.score(bench.load(questions=q, gt=gt), {"0": "three", "1": "red"})
        assert m["total"] == pytest.approx(70)
        assert _FakeChat.seen[0]["auth"] == "Bearer sk-test"
        assert "red <AND> white" in _FakeChat.seen[1]["messages"][0]["content"]
        assert _FakeChat.seen[2]["temperature"] > _FakeChat.seen[1]["temperature"]
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.delenv("TEST_JUDGE_KEY")
    with pytest.raises(JudgeUnavailable, match="TEST_JUDGE_KEY"):
        EndpointJudge("http://127.0.0.1:9/v1", "m", "TEST_JUDGE_KEY")
