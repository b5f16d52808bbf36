"""The local SLURM cluster for tests: bring it up once per session (scripts/slurm/up.sh) or skip, saying why.

Use it from a test module with

    from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        ex = slurm_cluster.executor(tmp_path / "submitit")
        ...or: subprocess.run([..., "-m", *slurm_cluster.hydra_overrides(), ...])

Environment:
  ABLATE_SLURM_START=0      never run up.sh; skip unless a cluster already answers
  ABLATE_SLURM_REQUIRED=1   fail instead of skip when no cluster can be had (CI, where a skip would hide breakage)
  ABLATE_SLURM_PARTITION    partition to submit to (default: debug, as up.sh creates it)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "scripts" / "slurm" / "up.sh"
TESTS = Path(__file__).resolve().parent
UP_TIMEOUT_S = 900  # a cold install downloads ~20 packages
_HEALTHY = {"idle", "mixed", "allocated", "completing"}


@dataclass(frozen=True)
class Cluster:
    """What a test needs to know about the cluster it submits to."""

    partition: str
    node: str
    cpus: int  # CPUs the node advertises: a request above this is refused at submission
    mem_mb: int

    def executor(self, folder: Path, max_num_timeout: int = 0, **params):
        """A submitit executor for 1-CPU, 1-GB jobs on this cluster; `params` override (submitit's names).

        `folder` must be fresh per test run: job ids restart at 1 when the cluster's state is wiped, and a
        reused folder would hand back another job's old result. `max_num_timeout` > 0 requeues on timeout.
        """
        import submitit

        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm", slurm_max_num_timeout=max_num_timeout)
        base = dict(slurm_partition=self.partition, timeout_min=5, cpus_per_task=1, mem_gb=1, nodes=1,
                    tasks_per_node=1,
                    # Jobs unpickle callables from tests/ helper modules, so they need tests/ importable.
                    slurm_setup=[f"export PYTHONPATH={TESTS}${{PYTHONPATH:+:$PYTHONPATH}}"])
        base.update(params)
        ex.update_parameters(**base)
        return ex

    def hydra_overrides(self, launcher: str = "submitit_slurm") -> list[str]:
        """Command-line overrides that send a Hydra multirun here, with requests this node can satisfy."""
        p = "hydra.launcher"
        return [f"hydra/launcher={launcher}", f"{p}.partition={self.partition}", f"{p}.timeout_min=5",
                f"{p}.cpus_per_task=1", f"{p}.mem_gb=1", f"{p}.nodes=1", f"{p}.tasks_per_node=1",
                f"{p}.array_parallelism=4"]


def result_within(job, seconds: float):
    """job.result(), but cancel the job and fail the test if it isn't done in `seconds` (result() never gives up)."""
    deadline = time.monotonic() + seconds
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"SLURM job {job.job_id} not done after {seconds:.0f} s (state {job.state})")
        time.sleep(1)
    return job.result()


def _query(partition: str) -> Cluster | None:
    """The cluster as sinfo sees it, or None when there is none (or its node isn't usable)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N %c %m %T"], capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        node, cpus, mem, state = line.split()
        if state in _HEALTHY:
            return Cluster(partition=partition, node=node, cpus=int(cpus), mem_mb=int(mem.rstrip("+")))
    return None


def _accounting_ok() -> bool:
    # submitit learns job states only through sacct; without it every job is UNKNOWN and result() can hang.
    if shutil.which("sacct") is None:
        return False
    try:
        r = subprocess.run(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _start() -> str | None:
    """Run up.sh; None when it worked, else why not."""
    if os.environ.get("ABLATE_SLURM_START", "1") == "0":
        return "no SLURM cluster answers and ABLATE_SLURM_START=0 forbids starting one (run `make slurm-up`)"
    if os.geteuid() != 0:
        return "no SLURM cluster answers and starting one needs root: run `sudo scripts/slurm/up.sh`"
    try:
        r = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"scripts/slurm/up.sh took more than {UP_TIMEOUT_S} s"
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
    reasons = {2: "scripts/slurm/up.sh can't run on this machine (needs root and apt-get)",
               3: "SLURM packages are missing and apt is unreachable"}
    if r.returncode != 0:
        return f"{reasons.get(r.returncode, f'scripts/slurm/up.sh failed (exit {r.returncode})')}:\n{tail}"
    return None


_cached: Cluster | str | None = None  # one attempt per session, shared by every module that imports the fixture


def ensure_cluster() -> Cluster:
    """The running cluster, started by up.sh if needed; skips (or fails, ABLATE_SLURM_REQUIRED=1) otherwise."""
    global _cached
    partition = os.environ.get("ABLATE_SLURM_PARTITION", "debug")
    if _cached is None:
        cluster = _query(partition) if _accounting_ok() else None
        if cluster is None:
            why = _start()
            cluster = _query(partition) if why is None else None
            if cluster is None and why is None:
                why = f"up.sh succeeded but partition {partition!r} has no usable node"
            _cached = cluster or why
        else:
            _cached = cluster
    if isinstance(_cached, str):
        if os.environ.get("ABLATE_SLURM_REQUIRED") == "1":
            pytest.fail(_cached, pytrace=False)
        pytest.skip(_cached)
    return _cached


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    """Session fixture: the local SLURM cluster (left running afterwards; `make slurm-down` stops it)."""
    return ensure_cluster()
