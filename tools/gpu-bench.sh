#!/usr/bin/env bash
# The GPU protocol: one short run gives the whole table (docs/design.md §13.3).
#   bash tools/gpu-bench.sh            on a CUDA machine: SD1.5- and SDXL-shaped full-width random U-Nets, fp16,
#                                      20 steps, CFG batch 2, 2048² both and SDXL 4096² if memory allows; ours, our
#                                      baseline and the reference in one process each, --repeat 3
#   bash tools/gpu-bench.sh --cpu-dry-run   the same steps on the CPU with tiny sizes, to check the script itself
# Installs what the CPU CI installs except torch: the machine's own CUDA torch stays. Writes JSON per run and
# table.md to $OUT (default out/gpu-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu-bench}"
MODE="${1:-gpu}"
mkdir -p "$OUT"
python -c "import torch" || { echo "torch is not installed: install the machine's CUDA torch first" >&2; exit 1; }
grep -v '^torch==' requirements-test.txt > "$OUT/requirements-no-torch.txt"
python -m pip install -q -r "$OUT/requirements-no-torch.txt"
python -m pip install -q --no-deps stable-diffusion-sdkit==2.1.5 hidiffusion==0.1.10

if [ "$MODE" = "--cpu-dry-run" ]; then
    common=(--device cpu --dtype fp32 --steps 2 --repeat 1 --width-scale 0.125)
    runs=("sd15 256" "sdxl 256" "sdxl 512")
else
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device" >&2; exit 1; }
    common=(--device cuda --dtype fp16 --steps 20 --repeat 3)
    runs=("sd15 2048" "sdxl 2048" "sdxl 4096")
fi

for run in "${runs[@]}"; do
    set -- $run
    name="$1-$2"
    if ! python -m hidiffusion_ext.devtools.bench --family "$1" --size "$2" "${common[@]}" --json "$OUT/$name.json" \
            2>&1 | tee "$OUT/$name.log"; then
        echo "$name did not finish (out of memory?): see $OUT/$name.log" | tee -a "$OUT/skipped.txt"
        rm -f "$OUT/$name.json"
    fi
done
if [ "$MODE" = "--cpu-dry-run" ]; then
    overhead_args=(--device cpu --dtype fp32 --width-scale 0.125 --repeat 1 --sizes 256 512)
else
    overhead_args=(--device cuda --dtype fp16 --repeat 5)
fi
python -m hidiffusion_ext.devtools.bench --overhead "${overhead_args[@]}" --json "$OUT/overhead.json" | tee "$OUT/overhead.log"
python -m hidiffusion_ext.devtools.bench --table "$OUT"/*-*.json > "$OUT/table.md"
{ echo; echo "$(date -u +%Y-%m-%d), $(python -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")')"; } >> "$OUT/table.md"
cat "$OUT/table.md"
