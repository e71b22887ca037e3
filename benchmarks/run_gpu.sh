#!/usr/bin/env bash
# GPU figures in one go on a CUDA machine: the test suite (GUI tests excluded) on CUDA,
# then the tiling, training-throughput and CRF benchmarks. Logs go to $LOG_DIR (default .).
# Usage: bash benchmarks/run_gpu.sh [tests] [tiling] [training] [crf]
set -uo pipefail
LOG_DIR=${LOG_DIR:-.}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
steps=${*:-tests tiling training crf}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
for s in $steps; do
  case $s in
    tests) python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_napari.py --ignore=tests/test_package.py \
             2>&1 | tee "$LOG_DIR/gpu_tests.log" | tail -25 ;;
    tiling) python3 benchmarks/bench_tiling.py --size 4096 --repeats 3 --large 0 \
             2>&1 | tee "$LOG_DIR/gpu_tiling.log" ;;
    training) python3 benchmarks/bench_training.py --minutes 1 \
             2>&1 | tee "$LOG_DIR/gpu_training.log" ;;
    crf) python3 benchmarks/bench_crf.py 2>&1 | tee "$LOG_DIR/gpu_crf.log" ;;
  esac
done
