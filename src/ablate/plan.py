"""Plan mode: which cells a sweep would run, which are done, which stage-1 artifacts they share, GPU-hours."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from omegaconf import DictConfig

from ablate import cell as C

# Sample counts of the paper's data (LCS-558K, llava_v1_5_mix665k) and rough text tokens per sample; a data
# config may override them under `data.stats`. They only feed the GPU-hour estimate.
_DEFAULT_STATS = {"align_samples": 558_128, "instruct_samples": 665_298,
                  "align_text_tokens": 40, "instruct_text_tokens": 300}


@dataclass
class PlannedCell:
    cell_id: str
    stage1_id: str
    axes: dict
    status: str          # complete | re-eval | failed | running | todo | duplicate (same cell as an earlier job)
    stage1_done: bool
    gpu_hours: float     # estimate for what is still to run (a shared stage 1 is counted at its first cell)
    force: bool = False  # run.force: a complete cell is redone
    metrics: dict = field(default_factory=dict)   # eval metrics of a complete row

    @property
    def to_run(self) -> bool:
        return self.status != "duplicate" and (self.status != "complete" or self.force)


def _param_counts(cfg: DictConfig) -> dict[str, int]:
    """Exact parameters per module of the cell's architecture, counted on the meta device (no download)."""
    from ablate.models.build import param_counts

    if cfg.scale.arch == "tiny":   # the tiny LM's vocabulary is the locally built tokenizer's
        from ablate.data.tokenizer import build_word_tokenizer
        vocab = len(build_word_tokenizer())
    else:
        vocab = int(cfg.lm.arch.vocab_size)
    return param_counts(cfg, vocab)


def estimate_gpu_hours(cfg: DictConfig, stage: str) -> float:
    """2-6*N*T FLOPs (see _flops_per_token), at an assumed MFU of the peak throughput."""
    from ablate.models.encoder import num_image_tokens

    stats = _DEFAULT_STATS | dict(cfg.data.get("stats") or {})
    if cfg.data.name == "synthetic":
        stats.update(align_samples=cfg.data.get("num_train", 0), instruct_samples=cfg.data.get("num_train", 0))
    l_img = num_image_tokens(cfg.encoder, int(cfg.resolution))
    s = cfg.scale["stage1" if stage == "align" else "stage2"]
    samples = stats[f"{stage}_samples"]
    if s.max_steps:
        samples = s.max_steps * s.batch_size
    else:
        samples *= s.max_epochs
    counts = _param_counts(cfg)
    n_enc, n_lm = counts["encoder"], counts["lm"]
    lm_tokens = samples * (l_img + stats[f"{stage}_text_tokens"])
    enc_tokens = samples * l_img
    flops = _flops_per_token(cfg, stage, "encoder") * n_enc * enc_tokens + \
        _flops_per_token(cfg, stage, "lm") * n_lm * lm_tokens
    peak = float(cfg.run.get("gpu_peak_tflops", 989.0)) * 1e12   # H100 SXM bf16 dense
    mfu = float(cfg.run.get("assumed_mfu", 0.35))
    return flops / (peak * mfu) / 3600


def _flops_per_token(cfg: DictConfig, stage: str, module: str) -> int:
    """FLOPs per parameter and position: forward 2; backward 2 for activation gradients (needed in the LM
    always, since the projector below it trains) and 2 more for weight gradients of fully trained weights."""
    trains = stage == "instruct" and bool(cfg.freeze.get("train_" + module))
    lora = cfg.tuning.get("mode") == "lora" and cfg.tuning.get("targets") in (module, "both")
    if module == "encoder":
        return 2 + (2 if trains else 0) + (2 if trains and not lora else 0)
    return 4 + (2 if trains and not lora else 0)


def plan_cells(jobs: list[DictConfig]) -> list[PlannedCell]:
    """Each job's cell: its status from its row, whether its stage 1 exists, and the GPU-hours still to spend."""
    out = []
    seen: set[str] = set()
    counted: set[str] = set()  # a shared stage 1 is paid for once
    for job in jobs:
        cid, sid = C.cell_id(job), C.stage1_id(job)
        row = C.read_row(C.cell_dir(job))
        status = "duplicate" if cid in seen else (row["status"] if row else "todo")
        if status == "complete" and not C.eval_matches(row, job):
            status = "re-eval"   # trained, but evaluated with other eval settings: only evaluation runs
        seen.add(cid)
        metrics = {k: v for k, v in (row or {}).get("metrics", {}).items() if k.startswith("eval/")}
        p = PlannedCell(cid, sid, C.axes(job), status, C.stage_done(C.stage1_dir(job)), 0.0,
                        bool(job.run.force), metrics if status == "complete" else {})
        if p.to_run and status != "re-eval":
            p.gpu_hours = estimate_gpu_hours(job, "instruct")
            if not p.stage1_done and sid not in counted:
                p.gpu_hours += estimate_gpu_hours(job, "align")
                counted.add(sid)
        out.append(p)
    return out


def describe(plan: list[PlannedCell]) -> str:
    """The plan as text: cells grouped by the stage-1 artifact they share, with status and GPU-hours."""
    by_status = defaultdict(int)
    for p in plan:
        by_status[p.status] += 1
    groups = defaultdict(list)
    for p in plan:
        groups[p.stage1_id].append(p)
    n_run = sum(p.to_run for p in plan)
    s1_todo = sum(1 for g in groups.values() if not g[0].stage1_done and any(p.to_run for p in g))
    lines = [f"ablate plan: {len(plan)} cells ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}); "
             f"{n_run} to run",
             f"  stage-1 artifacts: {len(groups)} ({sum(1 for g in groups.values() if g[0].stage1_done)} done, "
             f"{s1_todo} to train), shared by {sum(len(g) for g in groups.values() if len(g) > 1)} cells"]
    for sid, cells in groups.items():
        ax = cells[0].axes
        lines.append(f"  stage1 {sid} [{'done' if cells[0].stage1_done else 'todo'}] encoder={ax['encoder']} "
                     f"resolution={ax['resolution']} lm={ax['lm']} seed={ax['seed']} -> {len(cells)} cell(s)"
                     + (" (shared)" if len(cells) > 1 else ""))
        for p in cells:
            rest = " ".join(f"{k}={v}" for k, v in p.axes.items() if k in ("tuning", "freeze", "data", "scale"))
            what = "redo (run.force)" if p.status == "complete" and p.force else p.status
            cost = f"  ~{_hours(p.gpu_hours)} GPU-h" if p.to_run else ""
            lines.append(f"    cell {p.cell_id} [{what}] {rest}{cost}")
    lines.append(f"  estimated GPU-hours still to run: {_hours(sum(p.gpu_hours for p in plan))} "
                 "(2-6 FLOPs x params x positions at run.assumed_mfu of run.gpu_peak_tflops)")
    return "\n".join(lines)


def _hours(h: float) -> str:
    return f"{h:.2f}" if h >= 0.01 or h == 0 else f"{h:.1e}"
