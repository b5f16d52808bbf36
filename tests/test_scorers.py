"""Parsers and scorers of every benchmark, on small hand-written files in the official layouts."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from ablate.eval.benchmarks import BENCHMARKS, get_benchmark
from ablate.eval.benchmarks.gqa import gqa_parse
from ablate.eval.benchmarks.mmbench import mmbench_parse
from ablate.eval.benchmarks.mme import mme_parse
from ablate.eval.benchmarks.pope import pope_parse
from ablate.eval.benchmarks.scienceqa import sqa_parse
from ablate.eval.benchmarks.seed import seed_parse
from ablate.eval.judge import JudgeUnavailable, make_judge
from ablate.eval.records import EvalInputError

ABCD = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("raw, expected", [
    ("Yes", "yes"), ("No", "no"), ("no.", "no"), ("Yes, there is a dog.", "yes"), ("There is no dog.", "no"),
    ("Yes. There is not a cat.", "yes"),   # only the first sentence counts
    ("Not really", "yes"),                 # "Not" is not in eval_pope's word list
    ("", "yes"), ("No,there", "yes"),      # commas are deleted, gluing the words
])
def test_pope_parse(raw, expected):
    assert pope_parse(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Yes", "yes"), ("No.", "no"), ("yes, it is", "yes"), ("Not sure", "no"), ("I think yes", "other"), ("", "other"),
])
def test_mme_parse(raw, expected):
    assert mme_parse(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("C", "C"), (" C ", "C"), ("C. apostrophe", "C"), ("The answer is C.", "C"), ("so The answer is D", "D"),
    ("C.", "FAILED"),                    # neither a bare letter nor "X. " (LLaVA's rule)
    ("A and B", "FAILED"), ("B\nThe answer is A", "B"), ("", "FAILED"), ("F", "FAILED"), ("c", "FAILED"),
])
def test_scienceqa_parse(raw, expected):
    assert sqa_parse(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("C", "C"), ("The answer is C.", "C"), ("(B) dog", "B"), ("A or C", None), ("E", None),
    ("Z", "Z"), ("Cannot determine the answer", "Z"), ("it is a bird", "C"), ("a cat and a dog", None), ("", None),
])
def test_mmbench_parse(raw, expected):
    assert mmbench_parse(raw, dict(ABCD)) == expected


def test_gqa_and_seed_parse():
    assert gqa_parse("Yes.") == "yes" and gqa_parse("Left side..") == "left side" and gqa_parse(" no") == " no"
    assert seed_parse(" B\n") == "B" and seed_parse("B.") == "B."


def test_registry_has_every_paper_benchmark_and_prompt_suffixes():
    assert {"vqav2", "gqa", "vizwiz", "scienceqa", "textvqa", "pope", "mme", "mmbench", "mmbench_cn", "seed",
            "mmvet", "synth_vqa", "synth_pope", "synth_mmb", "synth_text"} <= set(BENCHMARKS)
    short = "\nAnswer the question using a single word or phrase."
    for name in ("vqav2", "gqa", "textvqa", "pope", "mme"):
        assert get_benchmark(name).prompt_suffix == short
    assert get_benchmark("vizwiz").prompt_suffix.startswith("\nWhen the provided information is insufficient")
    for name in ("scienceqa", "mmbench", "seed"):
        assert get_benchmark(name).prompt_suffix == "\nAnswer with the option's letter from the given choices directly."
    with pytest.raises(EvalInputError, match="unknown benchmark 'nope'"):
        get_benchmark("nope")


def test_pope_metrics_per_split_and_average(tmp_path):
    qs, rnd, pop = [], [], []
    for split, labels, store in (("random", ["yes", "no", "yes", "no"], rnd), ("popular", ["yes", "no"], pop)):
        for i, label in enumerate(labels):
            text = f"Is there a thing{i} in the image?"
            qs.append({"question_id": len(qs) + 1, "image": f"{i}.jpg", "text": text, "category": split})
            store.append({"question_id": i + 1, "image": f"{i}.jpg", "text": text, "label": label})
    jsonl(tmp_path / "q.jsonl", qs)
    jsonl(tmp_path / "coco" / "coco_pope_random.json", rnd)
    jsonl(tmp_path / "coco" / "coco_pope_popular.json", pop)
    bench = get_benchmark("pope")
    questions = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "coco")
    assert questions[0].prompt.endswith("single word or phrase.")
    preds = dict(zip(["1", "2", "3", "4", "5", "6"], ["Yes", "Yes.", "No", "No, none", "yes", "no"]))
    m, rows = bench.score(questions, preds)
    assert (m["random/accuracy"], m["random/precision"], m["random/recall"], m["random/f1"]) == (50, 50, 50, 50)
    assert m["random/yes_ratio"] == 50 and m["popular/f1"] == 100
    assert m["f1"] == pytest.approx(75.0) and len(rows) == 6 and rows[3]["parsed"] == "no"
    rnd[1]["text"] = "Is there a unicorn in the image?"
    jsonl(tmp_path / "coco" / "coco_pope_random.json", rnd)
    with pytest.raises(EvalInputError, match=r"q.jsonl:2: question does not match label line 2"):
        bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "coco")


def test_mme_acc_plus_needs_both_questions_of_an_image(tmp_path):
    gt = tmp_path / "MME_Benchmark_release_version"
    qs = []
    for subtask, nested in (("existence", False), ("scene", True)):
        qa_dir = gt / subtask / ("questions_answers_YN" if nested else "")
        qa_dir.mkdir(parents=True)
        for img in ("1", "2"):
            (qa_dir / f"{img}.txt").write_text(f"Is there a cat? Please answer yes or no.\tYes\n"
                                               f"Is there a  dog?  Please answer yes or no.\tNo\n")
            image = f"{subtask}/{'images/' if nested else ''}{img}.jpg"
            for q in ("Is there a cat?", "Is there a dog?"):
                qs.append({"question_id": image, "image": image, "category": subtask,
                           "text": q + "\nAnswer the question using a single word or phrase."})
    jsonl(tmp_path / "llava_mme.jsonl", qs)
    bench = get_benchmark("mme")
    questions = bench.load(questions=tmp_path / "llava_mme.jsonl", gt=gt)
    assert len({q.question_id for q in questions}) == 8   # image ids repeat; question ids do not
    answers = [{"question_id": r["question_id"], "prompt": r["text"], "text": t}
               for r, t in zip(qs, ["Yes", "No", "Yes", "Yes", "Yes", "No", "Yes", "No"])]
    jsonl(tmp_path / "answers.jsonl", answers)
    m, _ = bench.score(questions, bench.read_answers(tmp_path / "answers.jsonl", questions))
    assert (m["existence/acc"], m["existence/acc_plus"], m["existence/score"]) == (75, 50, 125)
    assert m["scene/score"] == 200 and m["perception"] == 325 and m["cognition"] == 0


def _b64_png():
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_mmbench_circular_eval_needs_every_rotated_copy(tmp_path):
    head = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n"
    rows = ["0\tWhat?\tA hint\tcat\tdog\tNone\t\tA\tanimals\t{img}",
            "1000000\tWhat?\t\tdog\tcat\t\t\tB\tanimals\t{img}",
            "1\tWho?\t\tred\tblue\tgreen\tpink\tC\tcolours\t{img}",
            "1000001\tWho?\t\tblue\tgreen\tpink\tred\tB\tcolours\t{img}"]
    path = tmp_path / "mmbench_dev.tsv"
    path.write_text(head + "\n".join(r.format(img=_b64_png()) for r in rows) + "\n")
    bench = get_benchmark("mmbench")
    qs = bench.load(questions=path)
    assert qs[0].prompt == ("A hint\nWhat?\nA. cat\nB. dog\n"
                            "Answer with the option's letter from the given choices directly.")  # stops at "None"
    assert qs[0].image.size == (8, 6)
    # identical image cells (rotated copies) are one object, so batched generation shares their prefix
    assert qs[0].image is qs[1].image is qs[3].image
    m, rows_out = bench.score(qs, {"0": "A", "1000000": "B", "1": "C", "1000001": "A"})
    assert m["accuracy"] == 50 and m["vanilla_accuracy"] == 100 and m["category/colours"] == 0
    assert [r["circular_pass"] for r in rows_out] == [True, True, False, False]
    out = bench.write_submission(qs, {"0": "A", "1000000": "B", "1": "C", "1000001": "A"}, tmp_path / "up.xlsx")
    import pandas as pd
    assert list(pd.read_excel(out).columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer"]


def test_scienceqa_img_and_all_accuracy(tmp_path):
    def rec(i, question, answer, image=True):
        convs = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        return {"id": i, **({"image": f"{i}/image.png"} if image else {}), "conversations": convs}

    recs = [rec("1", "<image>\nWhich?\nA. x\nB. y", "B"), rec("2", "Which?\nA. x\nB. y\nC. z", "C", image=False),
            rec("3", "Closing?\nA. See you,\nJanet\nB. Bye,\nJanet", "A")]
    (tmp_path / "q.json").write_text(json.dumps(recs))
    bench = get_benchmark("scienceqa")
    qs = bench.load(questions=tmp_path / "q.json")
    assert [q.refs["n_choices"] for q in qs] == [2, 3, 2] and qs[1].image is None
    assert qs[0].prompt.startswith("Which?") and "<image>" not in qs[0].prompt
    m, rows = bench.score(qs, {"1": "The answer is B.", "2": "C", "3": "C"})   # "C" is beyond question 3's options
    assert m["accuracy"] == pytest.approx(200 / 3) and m["img_accuracy"] == 50 and rows[2]["score"] == 0


def test_vqav2_answer_types_and_submission(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": 7, "image": "a.jpg", "text": "How many?"},
                                 {"question_id": 8, "image": "b.jpg", "text": "What?"}])
    anns = [{"question_id": qid, "answer_type": t, "answers": [{"answer": a, "answer_id": i} for i in range(10)]}
            for qid, t, a in ((7, "number", "2"), (8, "other", "cat"))]
    (tmp_path / "ann.json").write_text(json.dumps({"annotations": anns}))
    bench = get_benchmark("vqav2")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "ann.json")
    m, _ = bench.score(qs, {"7": "Two.", "8": "dog"})
    assert m == {"accuracy": 50.0, "answer_type/number": 100.0, "answer_type/other": 0.0}
    out = bench.write_submission(qs, {"7": "Two."}, tmp_path / "sub.json")
    assert json.loads(out.read_text()) == [{"question_id": 7, "answer": "2"}, {"question_id": 8, "answer": ""}]


def test_vizwiz_scores_unanswerable_and_writes_llava_upload(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "v0.jpg", "text": "What?"}])
    (tmp_path / "val.json").write_text(json.dumps([{"image": "v0.jpg", "answer_type": "unanswerable",
                                                    "answers": [{"answer": "unanswerable"}] * 10}]))
    bench = get_benchmark("vizwiz")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "val.json")
    assert bench.score(qs, {"0": "Unanswerable."})[0] == {"accuracy": 100.0, "answer_type/unanswerable": 100.0}
    out = bench.write_submission(qs, {"0": "Unanswerable."}, tmp_path / "up.json")
    assert json.loads(out.read_text()) == [{"image": "v0.jpg", "answer": "unanswerable"}]


def test_textvqa_tells_apart_questions_sharing_an_image_id(tmp_path):
    texts = ["What brand?\nReference OCR token: ACME\nAnswer the question using a single word or phrase.",
             "What year?\nAnswer the question using a single word or phrase."]
    jsonl(tmp_path / "q.jsonl", [{"question_id": "img1", "image": "img1.jpg", "text": t} for t in texts])
    data = [{"image_id": "img1", "question": "What brand?", "answers": ["ACME"] * 10},
            {"image_id": "img1", "question": "What year?", "answers": ["1999"] * 7 + ["99"] * 3}]
    (tmp_path / "gt.json").write_text(json.dumps({"data": data}))
    bench = get_benchmark("textvqa")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "gt.json")
    jsonl(tmp_path / "a.jsonl", [{"question_id": "img1", "prompt": t, "text": a}
                                 for t, a in zip(texts, ["Acme", "99"])])
    m, rows = bench.score(qs, bench.read_answers(tmp_path / "a.jsonl", qs))
    assert rows[0]["score"] == 1.0 and rows[1]["score"] == pytest.approx(0.9) and m["accuracy"] == pytest.approx(95)
    jsonl(tmp_path / "bad.jsonl", [{"question_id": "img1", "text": "x"}])
    with pytest.raises(EvalInputError, match=r"bad.jsonl:1: cannot identify the question.*needs 'prompt'"):
        bench.read_answers(tmp_path / "bad.jsonl", qs)


def test_seed_exact_letter_match_image_and_video(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": str(i), "image": f"{i}.jpg", "text": "Q?\nA. x\nB. y"}
                                 for i in range(3)])
    gt = {"question_type": {"Scene Understanding": 1}, "questions": [
        {"question_id": "0", "answer": "B", "data_type": "image", "question_type_id": 1},
        {"question_id": "1", "answer": "A", "data_type": "image", "question_type_id": 1},
        {"question_id": "2", "answer": "A", "data_type": "video", "question_type_id": 1}]}
    (tmp_path / "seed.json").write_text(json.dumps(gt))
    bench = get_benchmark("seed")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "seed.json")
    m, _ = bench.score(qs, {"0": "B", "1": "A.", "2": "A"})
    assert m["accuracy"] == 50 and m["video_accuracy"] == 100 and m["type/scene_understanding"] == 50


def test_gqa_exact_match_after_llava_conversion(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": "1", "image": "a.jpg", "text": "Is it?"},
                                 {"question_id": "2", "image": "b.jpg", "text": "Who?"}])
    (tmp_path / "gt.json").write_text(json.dumps({"1": {"answer": "yes"}, "2": {"answer": "woman"}}))
    bench = get_benchmark("gqa")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "gt.json")
    assert bench.score(qs, {"1": "Yes.", "2": "The woman"})[0]["accuracy"] == 50


def _mmvet_files(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": i, "image": f"v1_{i}.png", "text": f"Q{i}?"} for i in range(2)])
    gt = {"v1_0": {"answer": "3", "capability": ["rec", "math"]},
          "v1_1": {"answer": "red<AND>white", "capability": ["rec"]}}
    (tmp_path / "mm-vet.json").write_text(json.dumps(gt))
    return tmp_path / "q.jsonl", tmp_path / "mm-vet.json"


def test_mmvet_from_grade_file_runs_and_capabilities(tmp_path):
    q, gt = _mmvet_files(tmp_path)
    (tmp_path / "grades.json").write_text(json.dumps({"v1_0": {"score": [1.0, 0.5]}, "v1_1": {"score": [0.0, 0.5]}}))
    bench = get_benchmark("mmvet", judge=make_judge(grades=tmp_path / "grades.json"))
    qs = bench.load(questions=q, gt=gt)
    m, rows = bench.score(qs, {"0": "three", "1": "red"})
    assert m["total"] == pytest.approx(50) and m["std"] == pytest.approx(0) and m["math"] == 75 and m["rec"] == 50
    assert rows[0]["runs"] == [1.0, 0.5]
    with pytest.raises(JudgeUnavailable, match="no judge set"):
        get_benchmark("mmvet").score(qs, {"0": "a", "1": "b"})
    with pytest.raises(JudgeUnavailable, match="--grades"):
        make_judge()


def test_seed_repeated_question_ids_pair_in_file_order(tmp_path):
    jsonl(tmp_path / "q.jsonl", [{"question_id": "5", "image": f"{i}.jpg", "text": "Q?"} for i in range(2)])
    (tmp_path / "seed.json").write_text(json.dumps({"questions": [{"question_id": "5", "answer": "A"},
                                                                  {"question_id": "5", "answer": "C"}]}))
    jsonl(tmp_path / "a.jsonl", [{"question_id": "5", "text": "A"}, {"question_id": "5", "text": "C"}])
    bench = get_benchmark("seed")
    qs = bench.load(questions=tmp_path / "q.jsonl", gt=tmp_path / "seed.json")
    assert [q.question_id for q in qs] == ["5", "5#2"]
    preds = bench.read_answers(tmp_path / "a.jsonl", qs)
    assert bench.score(qs, preds)[0]["accuracy"] == 100
    out = bench.write_submission(qs, preds, tmp_path / "up.jsonl")
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == ["5", "5"]


def test_synth_qa_blind_accuracy_is_the_per_type_majority_answer():
    """A model that ignores the image scores at most each type's most frequent answer; the row says how far above."""
    from ablate.eval.benchmarks.base import Question
    from ablate.eval.run import ExactMatch

    answers = [("color_at", "red"), ("color_at", "red"), ("color_at", "blue"), ("color_at", "green"),
               ("count", "1"), ("count", "1"), ("count", "2"), ("count", "1")]
    qs = [Question(question_id=str(i), image=None, prompt="q", refs=a, meta={"type": t})
          for i, (t, a) in enumerate(answers)]
    constant = {q.question_id: ("Red." if q.meta["type"] == "color_at" else "1") for q in qs}
    m, rows = ExactMatch().score(qs, constant)
    assert m["blind_color_at"] == 50.0 and m["blind_count"] == 75.0 and m["blind_accuracy"] == 62.5
    assert m["accuracy"] == m["blind_accuracy"]            # the constant answerer reaches the blind score, no more
    perfect = {q.question_id: q.refs for q in qs}
    assert ExactMatch().score(qs, perfect)[0]["accuracy"] == 100.0
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
