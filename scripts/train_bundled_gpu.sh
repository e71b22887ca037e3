#!/usr/bin/env bash
# Train both bundled nuclei models at once on one GPU (the grey and the RGB model
# share the card; patch sampling runs in worker processes on the CPU cores).
#
#   bash scripts/train_bundled_gpu.sh DATA OUT [MINUTES]
#
# DATA: the DSB2018 collection folder; OUT: where the model files, cards and logs go.
set -u
data=${1:?DATA folder}
out=${2:?OUT folder}
minutes=${3:-7.5}
mkdir -p "$out"
# One thread per process: the sampling workers fill the cores, not BLAS or OpenMP pools.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
common=(--data "$data" --split benchmarks/dsb2018_split.csv --minutes "$minutes"
        --out "$out" --patch-size 192 --batch-size 32 --device cuda)
cores=$(nproc)
grey_workers=$(( cores * 6 / 10 ))
rgb_workers=$(( cores * 3 / 10 ))
python3 scripts/train_bundled.py "${common[@]}" --kind grey --workers "$grey_workers" \
    --steps-per-epoch 600 --checkpoint /tmp/checkpoint_grey >"$out/grey.log" 2>&1 &
grey=$!
python3 scripts/train_bundled.py "${common[@]}" --kind rgb --workers "$rgb_workers" \
    --steps-per-epoch 200 --checkpoint /tmp/checkpoint_rgb >"$out/rgb.log" 2>&1 &
rgb=$!
sleep 90
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
tail -n 3 "$out/grey.log" "$out/rgb.log"
wait $grey; echo "grey exit $?"
wait $rgb; echo "rgb exit $?"
