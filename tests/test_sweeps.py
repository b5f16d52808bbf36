"""Sweep files, plan mode, pre-launch errors, shared stage 1, skip-on-rerun, widening and force.

The sweep files are composed exactly as `python -m ablate -m +sweep=<name>` composes them; the end-to-end
test runs a real (tiny, few-step) sweep of four freeze patterns through the CLI.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CONF, REPO, SMALL_DATA, ablate_cmd
from hydra import compose, initialize_config_dir

from ablate import cell as C
from ablate import sweeps
from ablate.plan import estimate_gpu_hours, plan_cells

# name: (swept axis, its values, the other axes held fixed at paper scale)
PAPER = {
    "fig2_lm": ("lm", ["phi2", "phi15", "qwen15_1_8b", "pythia_1_4b", "pythia_2_8b", "stablelm_1_6b"],
                dict(encoder="siglip", resolution=384, tuning="full", freeze="train_both")),
    "fig3_instruct": ("lm", ["phi2", "phi2_sft", "phi2_rlhf", "phi2_safe_rlhf"],
                      dict(encoder="siglip", resolution=384, tuning="full", freeze="train_both")),
    "fig4_encoder": ("encoder", ["clip", "siglip", "dinov2", "vit_in21k"],
                     dict(resolution=336, lm="phi2", tuning="full", freeze="train_both")),
    "fig4_resolution": ("resolution", [224, 336, 448], dict(encoder="clip", lm="phi2", tuning="full",
                                                            freeze="train_both")),
    "fig5_freeze": ("freeze", ["frozen_both", "train_encoder", "train_lm", "train_both"],
                    dict(encoder="siglip", resolution=384, lm="phi2", tuning="full")),
    "fig5_lora": ("tuning", ["full", "lora"], dict(encoder="siglip", resolution=384, lm="phi2", freeze="train_both")),
    "mipha3b": ("seed", [0, 1, 2], dict(encoder="siglip", resolution=384, lm="phi2_sft", tuning="full",
                                         freeze="train_both")),
}
# A few-step tiny cell: the sweep tests are about which cells run, not how well they learn.
QUICK = ["scale.stage1.max_steps=3", "scale.stage2.max_steps=3", "scale.stage1.batch_size=4",
         "scale.stage1.micro_batch_size=4", "scale.stage2.batch_size=4", "scale.stage2.micro_batch_size=4",
         "logger=none", "eval.max_questions=4", "eval.benchmarks=[synth_qa]", *SMALL_DATA]


def sweep_jobs(name: str, *overrides: str, root: Path = Path("/nonexistent")):
    """The job configs of `-m +sweep=<name> overrides...`, as the launcher would compose them."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={name}", f"paths.root={root}", *overrides],
                      return_hydra_config=True)
        assert sweeps.sweep_file_errors(name, cfg) == []
        return [sweeps.compose_job(cfg, ov, i) for i, ov in enumerate(sweeps.job_overrides(cfg))]


def test_sweeps_dir_holds_one_file_per_figure_and_a_tiny_twin_of_each():
    assert (REPO / "sweeps").resolve() == (CONF / "sweep").resolve()
    assert sorted(sweeps.sweep_names()) == sorted([*PAPER, *(f"{n}_tiny" for n in PAPER)])


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_sweep_composes_the_papers_cells(name):
    axis, values, fixed = PAPER[name]
    jobs = sweep_jobs(name)
    assert [C.axes(j)[axis] for j in jobs] == values
    for j in jobs:
        ax = C.axes(j)
        assert {k: ax[k] for k in fixed} == fixed and j.sweep_name == name
        assert (ax["scale"], ax["data"], j.eval.name) == ("paper", "llava", "paper")
        s1, s2 = j.scale.stage1, j.scale.stage2   # LLaVA-1.5's schedule
        assert (s1.batch_size, s1.lr, s1.max_epochs) == (256, 1e-3, 1)
        assert (s2.batch_size, s2.lr, s2.max_epochs) == (128, 2e-5, 1)
    assert len({C.cell_id(j) for j in jobs}) == len(jobs)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_tiny_twin_sweeps_the_same_values_over_seeds(name):
    axis, values, fixed = PAPER[name]
    jobs = sweep_jobs(f"{name}_tiny")
    expected = [(s, s) for s in values] if axis == "seed" else [(v, s) for v in values for s in (0, 1, 2)]
    assert sorted((C.axes(j)[axis], C.axes(j)["seed"]) for j in jobs) == sorted(expected)
    for j in jobs:
        ax = C.axes(j)
        assert (ax["scale"], ax["data"], j.eval.name) == ("tiny", "synthetic", "synthetic")
        assert {k: ax[k] for k in fixed if k != "resolution"} == {k: v for k, v in fixed.items() if k != "resolution"}


def test_command_line_narrows_a_sweep_file(tmp_path):
    out = subprocess.run(ablate_cmd("-m", "+sweep=fig4_encoder_tiny", "seed=0", "encoder=clip,siglip",
                                    f"paths.root={tmp_path}", "run.plan=true"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 cells (2 todo)" in out.stdout and "encoder=clip" in out.stdout and "encoder=siglip" in out.stdout


def test_cell_identity_is_content_not_launch():
    (base,) = sweep_jobs("fig5_freeze_tiny", "seed=0", "freeze=train_both")
    (logged,) = sweep_jobs("fig5_freeze_tiny", "seed=0", "freeze=train_both", "logger=none",
                           "hydra/launcher=slurm", "trainer.num_workers=2", "run.force=true", "sweep_name=other")
    assert C.cell_id(logged) == C.cell_id(base)
    (other_lr,) = sweep_jobs("fig5_freeze_tiny", "seed=0", "freeze=train_both", "scale.stage2.lr=0.01")
    assert C.cell_id(other_lr) != C.cell_id(base) and C.stage1_id(other_lr) == C.stage1_id(base)
    (other_s1,) = sweep_jobs("fig5_freeze_tiny", "seed=0", "freeze=train_both", "scale.stage1.lr=0.01")
    assert C.stage1_id(other_s1) != C.stage1_id(base)


def test_plan_counts_a_shared_stage1_once():
    jobs = sweep_jobs("fig5_freeze")
    plan = plan_cells(jobs)
    assert len({p.stage1_id for p in plan}) == 1 and all(p.status == "todo" for p in plan)
    stage2 = sum(estimate_gpu_hours(j, "instruct") for j in jobs)
    assert sum(p.gpu_hours for p in plan) == pytest.approx(stage2 + estimate_gpu_hours(jobs[0], "align"))
    # Freezing costs less: no weight gradients for the frozen LM (and no backward into a frozen encoder).
    hours = {p.axes["freeze"]: estimate_gpu_hours(j, "instruct") for p, j in zip(plan, jobs)}
    assert hours["frozen_both"] < hours["train_lm"] < hours["train_both"]


def test_plan_mode_lists_cells_and_runs_nothing(tmp_path):
    out = subprocess.run(ablate_cmd("-m", "+sweep=fig5_freeze_tiny", f"paths.root={tmp_path}", "run.plan=true"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "12 cells (12 todo); 12 to run" in out.stdout
    assert "stage-1 artifacts: 3 (0 done, 3 to train), shared by 12 cells" in out.stdout
    assert out.stdout.count("[todo] tuning=full freeze=") == 12 and "GPU-hours still to run" in out.stdout
    assert not (tmp_path / "cells").exists() and not (tmp_path / "stage1").exists()


# ---------------------------------------------------------------- bad input: one error, nothing launched

ONE_CELL = """# @package _global_
hydra:
  sweeper:
    params:
      seed: 0
"""
TYPO_PARAM = """# @package _global_
hydra:
  sweeper:
    params:
      encodr: clip,siglip
"""
TYPO_BODY = """# @package _global_
resolutoin: 224
hydra:
  sweeper:
    params:
      encoder: clip,siglip
"""
BAD_OPTION = """# @package _global_
hydra:
  sweeper:
    params:
      encoder: clip,sigclip
"""


@pytest.mark.parametrize("case, args, message", [
    ("no -m", ["+sweep=fig5_freeze_tiny"], "without -m (multirun) Hydra would run a single cell"),
    ("one cell", ["-m", "+sweep=one_cell"], "sweeps no axis"),
    ("typo in params", ["-m", "+sweep=typo_param"], "unknown key 'encodr'"),
    ("typo in body", ["-m", "+sweep=typo_body"], "unknown key 'resolutoin'"),
    ("bad option", ["-m", "+sweep=bad_option"], "no option ['sigclip'] in group encoder"),
    ("tasks != devices", ["-m", "seed=0,1", "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2"],
     "hydra.launcher.tasks_per_node=2 but trainer.devices=1"),
    ("GPUs on a CPU cell", ["-m", "seed=0,1", "hydra/launcher=slurm_gpu", "trainer.accelerator=cpu"],
     "would leave them idle"),
    ("more GPUs than devices", ["-m", "seed=0,1", "hydra/launcher=slurm_gpu", "trainer.accelerator=gpu",
                                "hydra.launcher.gpus_per_node=4", "trainer.devices=2"],
     "asks for 4 GPUs per node but trainer.devices=2"),
    ("swept devices", ["-m", "trainer.devices=1,2", "hydra/launcher=slurm"], "different (trainer.devices"),
    ("DDP in a local multirun", ["-m", "seed=0,1", "trainer.devices=2", "trainer.accelerator=cpu",
                                 "trainer.strategy=ddp"], "in a multirun on the local launcher"),
    ("bad cell value", ["-m", "resolution=224,225", "encoder=clip"], "resolution=225"),
    ("unknown option", ["-m", "encoder=clip,sigclip"], "cell #1 (encoder=sigclip"),
    ("FSDP on CPU", ["-m", "seed=0,1", "trainer.strategy=fsdp", "trainer.accelerator=cpu"],
     "Lightning's FSDP runs on GPUs only"),
])
def test_bad_sweep_input_is_one_error_before_anything_runs(tmp_path, case, args, message):
    extra = tmp_path / "conf" / "sweep"
    extra.mkdir(parents=True)
    for name, text in [("one_cell", ONE_CELL), ("typo_param", TYPO_PARAM), ("typo_body", TYPO_BODY),
                       ("bad_option", BAD_OPTION)]:
        (extra / f"{name}.yaml").write_text(text)
    root = tmp_path / "runs"
    out = subprocess.run(ablate_cmd(*args, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"paths.root={root}",
                                    *QUICK), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, (case, out.stdout[-1500:], out.stderr[-1500:])
    assert message in out.stderr, (case, out.stderr[-3000:])
    assert out.stderr.count("ablate:") == 1, out.stderr[-3000:]    # one error message, listing every problem
    # nothing ran and nothing was submitted: no cell, no stage 1, no submitit folder
    assert not any((root / d).exists() for d in ("cells", "stage1", "slurm")), sorted(root.rglob("*"))


# ---------------------------------------------------------------- a real sweep: sharing, skip, widen, force

def _sweep(root: Path, data_root: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run(ablate_cmd("-m", "+sweep=fig5_freeze_tiny", "seed=0", f"paths.root={root}",
                                    f"paths.data_root={data_root}", *QUICK, *args),
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, time.perf_counter() - t0


def _rows(root: Path) -> dict[str, dict]:
    rows = [json.loads(p.read_text()) for p in (root / "cells").glob("*/result.json")]
    return {r["axes"]["freeze"]: r for r in rows}


def test_freeze_sweep_shares_stage1_skips_complete_cells_widens_and_forces(tmp_path, data_root):
    root = tmp_path / "runs"
    # Two freeze patterns first, then the whole grid: only the two new cells run, on the same stage 1.
    _sweep(root, data_root, "freeze=frozen_both,train_both")
    first = _rows(root)
    out, _ = _sweep(root, data_root)
    assert "2 of 4 cells are complete and not launched; launching 2" in out.stdout + out.stderr
    rows = _rows(root)
    assert sorted(rows) == ["frozen_both", "train_both", "train_encoder", "train_lm"]
    assert all(rows[f]["created"] == first[f]["created"] for f in first)   # untouched
    assert all(r["status"] == "complete" for r in rows.values())

    # Stage 1 ran once: one artifact, one cell that trained it, three that loaded it (0 s of stage 1).
    assert len(list((root / "stage1").iterdir())) == 1 and len({r["stage1_id"] for r in rows.values()}) == 1
    trained = [f for f, r in rows.items() if not r["compute"]["stage1_shared"]]
    assert len(trained) == 1 and rows[trained[0]]["compute"]["wall_s"]["stage1"] > 0
    assert all(r["compute"]["wall_s"]["stage1"] == 0.0 for f, r in rows.items() if f not in trained)
    (s1,) = (root / "stage1").iterdir()
    assert json.loads((s1 / "stage1.json").read_text())["trained_by"] == rows[trained[0]]["cell_id"]
    assert len({r["metrics"]["train/stage1/loss"] for r in rows.values()}) == 1

    # Re-running the finished sweep launches nothing and leaves every row as it was.
    before = {f: (root / "cells" / r["cell_id"] / "result.json").read_bytes() for f, r in rows.items()}
    out, wall = _sweep(root, data_root)
    assert "4 of 4 cells are complete and not launched; launching 0" in out.stdout + out.stderr
    assert "Launching" not in out.stdout + out.stderr and wall < 60
    assert {f: (root / "cells" / r["cell_id"] / "result.json").read_bytes() for f, r in rows.items()} == before

    # Other eval settings: the cell is evaluated again, both trained stages reused (nothing trains).
    _sweep(root, data_root, "freeze=train_encoder", "eval.max_questions=2")
    re_eval = _rows(root)["train_encoder"]
    assert re_eval["config"]["eval"]["max_questions"] == 2 and re_eval["compute"]["wall_s"]["stage2"] == 0.0
    assert re_eval["compute"]["stage1_shared"] is True
    assert re_eval["metrics"]["train/stage2/loss"] == rows["train_encoder"]["metrics"]["train/stage2/loss"]

    # run.force=true redoes the cell (stage 2 and eval), reusing stage 1, with the same numbers.
    _sweep(root, data_root, "freeze=train_lm", "run.force=true")
    forced = _rows(root)["train_lm"]
    assert forced["created"] >= rows["train_lm"]["created"] and forced["compute"]["stage1_shared"] is True
    assert forced["metrics"] == rows["train_lm"]["metrics"]
