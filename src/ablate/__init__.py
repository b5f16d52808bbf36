"""ablate: design-space ablation sweeps of small LLaVA-style vision-language models."""
import os as _os

# OpenMP threads that busy-wait between kernels starve each other on a small or shared CPU: measured here,
# a tiny training step on 2 busy cores ran 6x slower with spinning threads than with sleeping ones
# (docs/performance.md). Sleeping costs nothing measurable when the cores are free. Set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
