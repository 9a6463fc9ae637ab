#!/usr/bin/env bash
# Test dependencies, in the one order that keeps torch on the CPU wheel (see requirements-test.txt).
set -euo pipefail
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements-test.txt
python -m pip install -q --no-deps stable-diffusion-sdkit==2.1.5 hidiffusion==0.1.10 k-diffusion==0.1.1.post1
