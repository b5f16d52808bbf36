#!/usr/bin/env bash
# The wheels benchmarks/gpu_mfu.py needs on the lent GPU machine beyond its own image (which has torch,
# lightning and accelerate, but transformers 5 and huggingface_hub 1.x, which ablate's pins exclude, and no
# hydra): the versions of this repo's venv, for CPython 3.12 on x86-64, into .whl/ (gitignored).
# Usage: bash benchmarks/gpu_wheels.sh   then see docs/performance.md for the device command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d .whl "transformers==$(ver transformers)" "tokenizers==$(ver tokenizers)" \
  "huggingface_hub==$(ver huggingface_hub)" "hydra-core==$(ver hydra-core)" "omegaconf==$(ver omegaconf)" \
  "peft==$(ver peft)"
# antlr4-python3-runtime (hydra's parser) is published as a source archive only: build its pure-Python wheel
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(ver antlr4-python3-runtime)"
ls -la .whl
du -sh .whl
