"""An installed (non-editable) ablate finds its configs and its sweeper plugin, from any directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_from_elsewhere(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO), "-w", str(wheels)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("ablate-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import ablate, hydra_plugins.ablate_sweeper as s;"
                            "print(ablate.__file__); print(s.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.split()
    assert all(p.startswith(str(target)) for p in where), where      # the installed copy, not the checkout
    out = subprocess.run([sys.executable, "-m", "ablate", "-m", "+sweep=fig5_lora_tiny", "run.plan=true",
                          f"paths.root={tmp_path / 'runs'}"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ablate plan:" in out.stdout and "lora" in out.stdout
