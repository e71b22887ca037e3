#!/usr/bin/env bash
# Train both bundled nuclei models at once on one GPU (the grey and the RGB model
# share the card; patch sampling runs in worker processes on the CPU cores).
#
#   bash scripts/train_bundled_gpu.sh DATA OUT [MINUTES [INIT]]
#
# DATA: the DSB2018 collection folder; OUT: where the model files, cards and logs go;
# INIT: a folder with an earlier run's nuclei_grey.segnet and nuclei_rgb.segnet to go
# on from (at a lower learning rate).
set -u
data=${1:?DATA folder}
out=${2:?OUT folder}
minutes=${3:-7.5}
init=${4:-}
mkdir -p "$out"
grey_init=() rgb_init=()
if [ -n "$init" ]; then
    grey_init=(--init "$init/nuclei_grey.segnet" --lr 1e-3)
    rgb_init=(--init "$init/nuclei_rgb.segnet" --lr 1e-3)
fi
# One thread per process: the sampling workers fill the cores, not BLAS or OpenMP pools.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
# Patches are fresh arrays every time: keep freed memory in the heap for reuse rather
# than returning it to the system and faulting new pages in (slow in virtual machines).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456
common=(--data "$data" --split benchmarks/dsb2018_split.csv --minutes "$minutes"
        --out "$out" --patch-size 192 --batch-size 32 --device cuda)
cores=$(nproc)
grey_workers=$(( cores * 7 / 10 ))
rgb_workers=$(( cores * 2 / 10 ))
python3 scripts/train_bundled.py "${common[@]}" --kind grey --workers "$grey_workers" "${grey_init[@]}" \
    --steps-per-epoch 600 --checkpoint /tmp/checkpoint_grey >"$out/grey.log" 2>&1 &
grey=$!
python3 scripts/train_bundled.py "${common[@]}" --kind rgb --workers "$rgb_workers" "${rgb_init[@]}" \
    --steps-per-epoch 200 --checkpoint /tmp/checkpoint_rgb >"$out/rgb.log" 2>&1 &
rgb=$!
sleep 60
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
tail -n 3 "$out/grey.log" "$out/rgb.log"
wait $grey; echo "grey exit $?"
wait $rgb; echo "rgb exit $?"
