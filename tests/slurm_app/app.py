"""A stand-alone Hydra app for launcher tests: each job writes what it was given, and where it ran, to out.json."""
import json
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    out = Path(HydraConfig.get().runtime.output_dir) / "out.json"
    out.write_text(json.dumps({
        "a": cfg.a,
        "b": cfg.b,
        # Proof that it ran as a SLURM task, and with how many tasks (tasks_per_node).
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_ntasks": os.environ.get("SLURM_NTASKS"),
    }))
    return f"{cfg.a}-{cfg.b}"


if __name__ == "__main__":
    main()
