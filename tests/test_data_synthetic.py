"""Tests of the synthetic generator: determinism, hashing, concurrency, record formats, config resolution."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from ablate.data import DataError, resolve_data
from ablate.data.llava import load_records
from ablate.data.render import COLOR_RGB
from ablate.data.synthetic import COLORS, POSITIONS, SHAPES, generate, settings_key

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "ablate" / "conf"
SMALL = {"num_train": 12, "num_eval": 6}


def data_cfg(root, **over):
    """The real conf/data/synthetic.yaml, resolved against ``root``, with overrides."""
    cfg = OmegaConf.create({"paths": {"data_root": str(root)}, "data": OmegaConf.load(CONF / "data/synthetic.yaml")})
    for k, v in {**SMALL, **over}.items():
        cfg.data[k] = v
    return cfg


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


_CHILD = ("import sys; from omegaconf import OmegaConf; from ablate.data.synthetic import generate; "
          "cfg = OmegaConf.create(sys.argv[1]); print(generate(cfg).root)")


def child(cfg_dict: dict, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg_dict)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_generation_is_byte_identical_across_processes(tmp_path):
    a = generate(data_cfg(tmp_path / "a").data)
    # a second process with another hash seed: nothing may depend on set/dict ordering or hash()
    cfg_b = {**OmegaConf.to_container(data_cfg(tmp_path / "b").data, resolve=True)}
    p = child(cfg_b, {"PYTHONHASHSEED": "12345"})
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    b = Path(out.strip())
    assert a.root.name == b.name
    ta, tb = tree_bytes(a.root), tree_bytes(b)
    assert ta.keys() == tb.keys() and len(ta) > 20
    assert all(ta[k] == tb[k] for k in ta)


def test_changed_setting_gets_a_new_root_and_complete_data_is_reused(tmp_path):
    base = generate(data_cfg(tmp_path).data)
    mtime = base.manifest.stat().st_mtime_ns
    assert generate(data_cfg(tmp_path).data).root == base.root
    assert base.manifest.stat().st_mtime_ns == mtime            # found, not rewritten
    for over in ({"seed": 1}, {"num_train": 13}, {"small_prob": 0.5}, {"text_px": [14]}):
        assert generate(data_cfg(tmp_path, **over).data).root != base.root, over
    # the root is a pure function of the settings, not of where it lives
    assert base.root.name == f"synthetic-{settings_key(json.loads(base.manifest.read_text())['settings'])}"


def test_two_processes_generating_at_once_agree(tmp_path):
    cfg = OmegaConf.to_container(data_cfg(tmp_path, num_train=40).data, resolve=True)
    procs = [child(cfg) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    roots = {o[0].strip() for o in outs}
    assert len(roots) == 1
    root = Path(roots.pop())
    assert (root / "manifest.json").is_file()
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]   # no leftovers
    assert len(json.loads((root / "align.json").read_text())) == 40


def test_eval_scene_records_have_exactly_the_agreed_format(tmp_path):
    paths = generate(data_cfg(tmp_path, num_eval=30).data)
    scenes = [json.loads(line) for line in paths.eval_scenes.read_text().splitlines()]
    assert len(scenes) == 30
    for i, s in enumerate(scenes):
        assert set(s) == {"scene_id", "image", "size", "objects", "text", "text_px"}
        assert s["scene_id"] == f"eval-{i:06d}" and s["image"] == f"images/eval-{i:06d}.png" and s["size"] == 448
        assert s["text"] is None or (len(s["text"]) == 2 and s["text"].isalnum() and s["text"].isupper())
        assert isinstance(s["text_px"], int)
        assert 1 <= len(s["objects"]) <= 3
        img = Image.open(paths.root / s["image"])
        assert img.size == (448, 448) and img.mode == "RGB"
        for o in s["objects"]:
            assert set(o) == {"shape", "color", "cx", "cy", "r", "size", "position"}
            assert o["shape"] in SHAPES and o["color"] in COLORS and o["position"] in POSITIONS
            assert o["size"] in ("large", "small") and (o["r"] <= 7) == (o["size"] == "small")
            assert 0 <= o["cx"] - o["r"] and o["cx"] + o["r"] < 448
            # the drawn pixel at the centre has the object's colour (even for small objects at 448 px)
            assert img.getpixel((o["cx"], o["cy"])) == COLOR_RGB[o["color"]]
        for key in ("shape", "color", "position"):
            assert len({o[key] for o in s["objects"]}) == len(s["objects"])   # unambiguous questions


def test_llava_json_files_are_well_formed(tmp_path):
    paths = generate(data_cfg(tmp_path).data)
    for name in ("align_json", "instruct_json", "eval_json"):
        recs = load_records(getattr(paths, name), paths.image_folder)   # the dataset's own validation
        for r in recs:
            conv = r["conversations"]
            assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
            assert sum(t["value"].count("<image>") for t in conv) == 1
    align = json.loads(paths.align_json.read_text())
    assert len(align) == 12 and all(len(r["conversations"]) == 2 for r in align)
    instruct = json.loads(paths.instruct_json.read_text())
    lo, hi = data_cfg(tmp_path).data.turns
    assert all(2 * lo <= len(r["conversations"]) <= 2 * hi for r in instruct)
    evals = json.loads(paths.eval_json.read_text())
    assert len(evals) == 6 * 2 and all(r["type"] != "describe" for r in evals)
    assert all(r["image"].startswith("images/eval-") for r in evals)
    scenes = {json.loads(x)["scene_id"]: json.loads(x) for x in paths.eval_scenes.read_text().splitlines()}
    for r in evals:   # answers agree with the scene they are about
        s, a = scenes[r["id"].rsplit("-q", 1)[0]], r["conversations"][1]["value"]
        if r["type"] == "count":
            assert a == str(len(s["objects"]))
        if r["type"] == "text_present":
            assert a == ("yes" if s["text"] else "no")


def test_bad_generator_setting_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"data\.text_px=\[10\].*multiples of 7"):
        generate(data_cfg(tmp_path, text_px=[10]).data)
    with pytest.raises(DataError, match=r"data\.question_weights"):
        generate(data_cfg(tmp_path, question_weights={"colour": 1}).data)


def test_resolve_data_synthetic_and_llava(tmp_path):
    cfg = data_cfg(tmp_path)
    out = resolve_data(cfg)
    assert {"align_json", "instruct_json", "image_folder", "align_image_folder", "eval_scenes"} <= set(out)
    assert all(Path(v).exists() for v in out.values())

    llava = OmegaConf.create({"data": OmegaConf.load(CONF / "data/llava.yaml")})
    os.environ["ABLATE_DATA"] = str(tmp_path / "nowhere")
    try:
        with pytest.raises(DataError) as e:
            resolve_data(llava)
        msg = str(e.value)
        assert "data.align_json=" in msg and "nowhere/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json" in msg
        assert "data.image_folder=" in msg and "Fix:" in msg
        # with every path in place it resolves
        d = tmp_path / "nowhere"
        (d / "LLaVA-Pretrain/images").mkdir(parents=True)
        (d / "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json").write_text("[]")
        (d / "llava_v1_5_mix665k.json").write_text("[]")
        assert resolve_data(llava)["instruct_json"] == str(d / "llava_v1_5_mix665k.json")
    finally:
        del os.environ["ABLATE_DATA"]


def test_yaml_defaults_match_the_code():
    # conf/data/synthetic.yaml documents the defaults; the two must not drift apart
    from ablate.data.synthetic import DEFAULTS, settings_from
    cfg = OmegaConf.create({"paths": {"data_root": "x"}, "data": OmegaConf.load(CONF / "data/synthetic.yaml")})
    assert settings_from(cfg.data) == DEFAULTS
    assert set(DEFAULTS) <= set(cfg.data)
