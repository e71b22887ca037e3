#!/usr/bin/env bash
# All GPU figures in one go, into one results folder (issue 26).
#
#   OUT=/some/dir bash benchmarks/run_gpu.sh          # everything, on a CUDA machine
#   DRY_RUN=1 bash benchmarks/run_gpu.sh              # CPU dry run: tiny sizes, ~3 minutes
#   bash benchmarks/run_gpu.sh gpu2d oom              # only some steps
#
# Steps (default: info tests oom crf gpu2d training gpu3d):
#   info      nvidia-smi, torch/CUDA versions, CPU, packages
#   tests     the tests marked gpu (skipped on CPU with "no CUDA device"), incl. CRF CUDA vs
#             CPU vs brute force; pass/fail/skip counts from a JUnit file
#   oom       out-of-memory back-off (batch and tile halving under a memory fraction), and
#             predict on the CPU at float32/bfloat16/float16
#   crf       bench_crf.py at 768x1024 and 1536x2048 against pydensecrf (CPU)
#   gpu2d     bench_gpu.py: ns.segment on an 8192x8192 uint16 image, fp32/bf16/fp16
#   gpu3d     bench_gpu.py: the same on a 128x1024x1024 ZYX stack
#   training  bench_train_speed.py: training patches/s, GPU vs CPU
# Optional: tests_all (whole suite on CUDA, GUI excluded), tiling (bench_tiling.py 4096),
#   training_ap (bench_training.py --minutes 1: throughput and AP after 1 minute).
#
# Results: $OUT (else ./gpu_results): one log per step, JSON from the benchmarks,
# steps.tsv (step, exit code, seconds) and summary.md (everything that matters, in one
# file). Each step runs under `timeout`, and the whole run under BUDGET_S seconds
# (default 540, so that it ends inside a 10-minute command limit): a step gets at most what is left, and is skipped below 20 s.
set -uo pipefail

RES=${OUT:-./gpu_results}
mkdir -p "$RES" && RES=$(cd "$RES" && pwd)
cd "$(dirname "$0")/.." || exit 1
DRY=${DRY_RUN:-0}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
steps=${*:-info tests oom crf gpu2d training gpu3d}
START=$SECONDS

HAS_CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [[ $DRY != 1 && $HAS_CUDA != 1 ]]; then
  echo "torch sees no CUDA device here; for a CPU dry run use DRY_RUN=1" | tee "$RES/summary.md"
  exit 2
fi
if [[ $DRY == 1 ]]; then
  DEV=cpu
  CRF_ARGS=(--device cpu --sizes 96x128 --photos none --repeats 1)
  G2_ARGS=(--device cpu --size2d 512 --size3d 0 --precisions float32,bfloat16 --repeats 1)
  G3_ARGS=(--device cpu --size2d 0 --size3d 4x256x256 --precisions float32,bfloat16 --repeats 1)
  TRAIN_ARGS=(--devices cpu --cpu-steps 2)
  echo "DRY_RUN=1: CPU only, tiny sizes; CUDA-only parts are skipped with a line saying so"
else
  DEV=cuda
  CRF_ARGS=(--device cuda --sizes 768x1024,1536x2048 --photos none --repeats 3)
  G2_ARGS=(--device cuda --size2d 8192 --size3d 0 --precisions float32,bfloat16,float16 --repeats 2)
  G3_ARGS=(--device cuda --size2d 0 --size3d 128x1024x1024 --precisions float32,bfloat16,float16
    --repeats 2)
  TRAIN_ARGS=(--devices cuda,cpu --steps 30 --cpu-steps 5)
fi
printf "step\trc\tseconds\n" >"$RES/steps.tsv"

# run_step NAME LIMIT_S COMMAND...: log to $RES/NAME.log (and the terminal), time it.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  if ((left < 20)); then
    echo "== $name: skipped, the time budget (BUDGET_S=$BUDGET_S) is spent" | tee "$RES/$name.log"
    printf "%s\tskipped\t0\n" "$name" >>"$RES/steps.tsv"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$RES/$name.log"
  local rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && echo "== $name: TIMED OUT after ${limit} s" | tee -a "$RES/$name.log"
  printf "%s\t%s\t%s\n" "$name" "$rc" "$((SECONDS - t0))" >>"$RES/steps.tsv"
}

info() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git log -1 --format="commit %h %s" 2>/dev/null
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
      --format=csv,noheader | sed 's/^/nvidia-smi: /'
    nvidia-smi
  else
    echo "nvidia-smi not found (no NVIDIA driver here)"
  fi
  $PY - <<'EOF'
import os, platform, torch, numpy
import napari_segnet as ns
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda},"
      f" cuDNN {torch.backends.cudnn.version()}, numpy {numpy.__version__}")
print(f"napari_segnet {ns.__version__} from {ns.__file__}")
print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
for mod in ("pynvml", "pydensecrf", "monai"):
    try:
        __import__(mod)
        print(f"{mod}: yes")
    except Exception as e:
        print(f"{mod}: no ({type(e).__name__})")
EOF
  grep -m1 "model name" /proc/cpuinfo 2>/dev/null
}

test_counts() { # JUnit XML -> one line of counts
  $PY - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    sys.exit(f"no test results ({type(e).__name__})")
s = root if root.tag == "testsuite" else root.find("testsuite")
n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(f"tests: {n - f - e - k} passed, {f} failed, {e} errors, {k} skipped (of {n})")
for case in s.iter("testcase"):
    for tag in ("failure", "error", "skipped"):
        el = case.find(tag)
        if el is not None:
            print(f"  {tag}: {case.get('classname')}::{case.get('name')}: {el.get('message', '')[:150]}")
EOF
}

PYTEST=($PY -m pytest -p no:cacheprovider -rA --ignore=tests/test_napari.py
  --ignore=tests/test_package.py)
for s in $steps; do
  case $s in
    info) export -f info && export PY && run_step info 60 bash -c info ;;
    tests)
      run_step tests 150 "${PYTEST[@]}" -m gpu --junitxml="$RES/tests.xml" tests
      test_counts "$RES/tests.xml" | tee -a "$RES/tests.log"
      [[ $DEV == cpu ]] && echo "tests: CUDA tests skipped on the CPU (dry run)" | tee -a "$RES/tests.log"
      ;;
    tests_all)
      run_step tests_all 400 "${PYTEST[@]}" -q --junitxml="$RES/tests_all.xml" tests
      test_counts "$RES/tests_all.xml" | tee -a "$RES/tests_all.log"
      ;;
    oom)
      run_step oom 120 $PY benchmarks/bench_gpu.py --device $DEV --size2d 0 --size3d 0 \
        --json "$RES/oom.json" ;;
    crf) run_step crf 150 $PY benchmarks/bench_crf.py "${CRF_ARGS[@]}" ;;
    gpu2d)
      run_step gpu2d 200 $PY benchmarks/bench_gpu.py "${G2_ARGS[@]}" --no-oom --cpu-amp-size 0 \
        --json "$RES/gpu2d.json" ;;
    gpu3d)
      run_step gpu3d 260 $PY benchmarks/bench_gpu.py "${G3_ARGS[@]}" --no-oom --cpu-amp-size 0 \
        --json "$RES/gpu3d.json" ;;
    training)
      run_step training 120 $PY benchmarks/bench_train_speed.py "${TRAIN_ARGS[@]}" \
        --json "$RES/training.json" ;;
    tiling) run_step tiling 240 $PY benchmarks/bench_tiling.py --size 4096 --repeats 3 --large 0 ;;
    training_ap) run_step training_ap 200 $PY benchmarks/bench_training.py --minutes 1 ;;
    *) echo "unknown step $s" ;;
  esac
done

# One file with everything that matters: the steps, the tables, the key lines.
{
  echo "# GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ)$([[ $DRY == 1 ]] && echo ' (DRY RUN, CPU)')"
  echo
  echo "Command: $([[ $DRY == 1 ]] && echo 'DRY_RUN=1 ')bash benchmarks/run_gpu.sh $steps; total $((SECONDS - START)) s"
  echo
  echo '```'
  column -t -s $'\t' "$RES/steps.tsv" 2>/dev/null || cat "$RES/steps.tsv"
  echo '```'
  for s in $steps; do
    f="$RES/$s.log"
    [[ -f $f ]] || continue
    echo
    echo "## $s"
    echo
    case $s in
      info) sed -n '1,2p' "$f"; grep -E "^(nvidia-smi|python|napari_segnet|CPU|GPU|pynvml|pydensecrf|monai|model name)" "$f" ;;
      tests | tests_all) grep -E "^(tests:|  (failure|error|skipped):)|TIMED OUT|skipped on the CPU" "$f" ;;
      *) grep -E "^\||MPix/s end to end|OOM back-off|x\$|TIMED OUT|Error|error|skipped|^device|^torch|^ns\.segment|^CPU autocast|N/A|pydensecrf is not" "$f" ;;
    esac
  done
} >"$RES/summary.md"
echo
echo "== results in $RES (summary: $RES/summary.md)"
