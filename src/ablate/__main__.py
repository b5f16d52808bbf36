"""`python -m ablate`: the Hydra entry point lives in ablate.cli (Submitit pickles __main__ objects badly)."""
from ablate.cli import main

main()
