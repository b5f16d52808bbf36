"""ablate: design-space ablation sweeps of small LLaVA-style vision-language models."""
__version__ = "0.1.0"
