"""Tiny stand-ins used by the SLURM tests: a Hydra app to sweep and a resumable job to time out."""
