#!/usr/bin/env bash
# The GPU checks in one script, for a lent GPU machine (the `device` tool): CUDA tests, the CUDA benchmarks
# and a short default training run on the GPU. Everything it prints goes to $OUT/gpu_log.txt, the result
# rows to $OUT/results.tgz (unpack over benchmarks/results/ here).
#
# The machine's python3 already has torch, torchvision, numba, OpenCV, hypothesis and pytest; the rest of
# cvkit's dependencies travel as wheels in .whl/ (see benchmarks/README section "GPU runs" in README.md):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 \
#     pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 simsimd==6.5.16 \
#     stringzilla==5.3.2 pycocotools==2.0.11
# Usage (device tool): carry [".whl"], command "bash benchmarks/gpu_check.sh [steps]"; steps default to
# "tests nms postprocess train_step train".
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
STEPS=${*:-tests nms postprocess train_step train}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 CVKIT_CACHE_DIR=/tmp/cvkit_cache
{
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, torchvision, numba, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
  date -u
  for step in $STEPS; do
    echo "=== $step ($(date -u +%H:%M:%S))"
    case $step in
      tests) timeout ${TESTS_TIMEOUT:-240} python3 -m pytest -q -m cuda -p no:cacheprovider tests/ops tests/engine/test_cuda.py tests/transforms/test_pipeline.py ;;
      nms) timeout 120 python3 benchmarks/bench_nms.py --device cuda --threads 1 --repeat 10 ;;
      postprocess) timeout 90 python3 benchmarks/bench_postprocess.py --device cuda --threads 1 --repeat 10 ;;
      train_step) timeout 150 python3 benchmarks/bench_train_step.py --device cuda --threads 1 --repeat 10 ;;
      train) timeout ${TRAIN_TIMEOUT:-240} python3 -m cvkit.cli.main train configs/default.yaml --set train.device=cuda \
               --set data.num_workers=8 --set train.progress=false --set train.output_dir=/tmp/runs ;;
      detector_test) timeout 120 python3 -m pytest -q -m cuda -p no:cacheprovider tests/ops/test_cuda_parity.py -k detector ;;
      sweep)  # default-config variants side by side on the one GPU: AP against epochs for longer schedules
        common="--set train.device=cuda --set data.num_workers=3 --set train.progress=false --set train.plots=false
                --set train.output_dir=/tmp/runs --set train.eval_every=4 --set train.tensorboard=false"
        timeout ${SWEEP_TIMEOUT:-280} python3 -m cvkit.cli.main train configs/default.yaml $common --set name=e32_lr1e-3 \
          --set train.epochs=32 > /tmp/sweep_a.log 2>&1 &
        timeout ${SWEEP_TIMEOUT:-280} python3 -m cvkit.cli.main train configs/default.yaml $common --set name=e32_lr3e-3 \
          --set train.epochs=32 --set train.lr=0.003 > /tmp/sweep_b.log 2>&1 &
        timeout ${SWEEP_TIMEOUT:-280} python3 -m cvkit.cli.main train configs/default.yaml $common --set name=e32_giou \
          --set train.epochs=32 --set loss.box_loss=giou > /tmp/sweep_c.log 2>&1 &
        timeout ${SWEEP_TIMEOUT:-280} python3 -m cvkit.cli.main train configs/default.yaml $common --set name=e16_lr2e-3 \
          --set train.epochs=16 --set train.lr=0.002 > /tmp/sweep_d.log 2>&1 &
        wait
        for f in /tmp/sweep_?.log; do echo "--- $f"; tr '\r' '\n' < "$f" | grep -v "synthetic\|UserWarning\|fetch_version"; done
        (cd /tmp/runs && tar czf "$OUT/sweep.tgz" */metrics.csv */eval_report.txt 2>/dev/null) ;;
      *) echo "unknown step $step" ;;
    esac
    echo "=== $step exit $?"
    tar czf "$OUT/results.tgz" benchmarks/results  # after every step: a killed run still returns its rows
  done
  date -u
} 2>&1 | tee "$LOG"
if [ -d /tmp/runs/default ]; then
  cp /tmp/runs/default/metrics.csv "$OUT/train_metrics.csv" 2>/dev/null
  cp /tmp/runs/default/eval_report.txt "$OUT/train_eval_report.txt" 2>/dev/null
fi
