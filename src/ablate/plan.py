"""Plan mode: which cells a sweep would run, which are done, which stage-1 artifacts they share, GPU-hours."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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
    status: str          # complete | failed | running | todo
    stage1_done: bool
    gpu_hours: float     # estimate for what is still to run


def approx_params(arch: dict) -> int:
    """Transformer parameters from config values: 12*L*d^2-style blocks (with the real MLP width) + embeddings."""
    d = int(arch.get("hidden_size", 0))
    layers = int(arch.get("num_hidden_layers", 0))
    inter = int(arch.get("intermediate_size", 4 * d))
    vocab = int(arch.get("vocab_size", 0))
    return layers * (4 * d * d + 2 * d * inter) + vocab * d * (1 if arch.get("tie_word_embeddings") else 2)


def estimate_gpu_hours(cfg: DictConfig, stage: str) -> float:
    """6*N*T FLOPs (backward through everything above the lowest trained module), at an assumed MFU."""
    from ablate.models.encoder import num_image_tokens

    arch_key = "tiny" if cfg.scale.arch == "tiny" else None
    enc = dict(cfg.encoder.get("arch") or {}) | (dict(cfg.encoder.get(arch_key) or {}) if arch_key else {})
    lm = dict(cfg.lm.get("arch") or {}) | (dict(cfg.lm.get(arch_key) or {}) if arch_key else {})
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
    n_enc, n_lm = approx_params(enc), approx_params(lm)
    lm_tokens = samples * (l_img + stats[f"{stage}_text_tokens"])
    enc_tokens = samples * l_img
    train_enc = stage == "instruct" and bool(cfg.freeze.get("train_encoder"))
    flops = 2 * n_enc * enc_tokens * (3 if train_enc else 1) + 6 * n_lm * lm_tokens
    peak = float(cfg.run.get("gpu_peak_tflops", 989.0)) * 1e12   # H100 SXM bf16 dense
    mfu = float(cfg.run.get("assumed_mfu", 0.35))
    return flops / (peak * mfu) / 3600


def plan_cells(jobs: list[DictConfig]) -> list[PlannedCell]:
    out = []
    counted: set[str] = set()  # a shared stage 1 is paid for once
    for job in jobs:
        cdir, s1 = C.cell_dir(job), C.stage1_dir(job)
        row = C.read_row(cdir)
        status = row["status"] if row else "todo"
        stage1_done = (s1 / "weights.pt").exists()
        hours = 0.0
        if status != "complete" or job.run.force:
            hours = estimate_gpu_hours(job, "instruct")
            if not stage1_done and C.stage1_id(job) not in counted:
                hours += estimate_gpu_hours(job, "align")
                counted.add(C.stage1_id(job))
        out.append(PlannedCell(C.cell_id(job), C.stage1_id(job), C.axes(job), status, stage1_done, hours))
    return out


def describe(plan: list[PlannedCell]) -> str:
    by_status = defaultdict(int)
    for p in plan:
        by_status[p.status] += 1
    groups = defaultdict(list)
    for p in plan:
        groups[p.stage1_id].append(p)
    # Stage-1 work is counted once per shared artifact, not once per cell.
    lines = [f"ablate plan: {len(plan)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())),
             f"  stage-1 artifacts: {len(groups)} ({sum(1 for g in groups.values() if g[0].stage1_done)} done)"]
    for sid, cells in groups.items():
        ax = cells[0].axes
        lines.append(f"  stage1 {sid} [{'done' if cells[0].stage1_done else 'todo'}] encoder={ax['encoder']} "
                     f"resolution={ax['resolution']} lm={ax['lm']} seed={ax['seed']} -> {len(cells)} cell(s)")
        for p in cells:
            rest = " ".join(f"{k}={v}" for k, v in p.axes.items() if k in ("tuning", "freeze", "data", "scale"))
            lines.append(f"    cell {p.cell_id} [{p.status}] {rest}  ~{p.gpu_hours:.2f} GPU-h")
    lines.append(f"  estimated GPU-hours still to run: {sum(p.gpu_hours for p in plan):.2f} "
                 "(6*N*T FLOPs at run.assumed_mfu of run.gpu_peak_tflops)")
    return "\n".join(lines)
