#!/usr/bin/env bash
# On a lent GPU machine (the workplace's `device` tool), after `bash benchmarks/device/prepare.sh` here.
#
#   device run, carry [".data", ".whl"], command:  bash benchmarks/device/run.sh STAGE
#
# Stages (each fits one call's 10-minute limit; results land in $OUT, which comes back):
#   check  the test suite with CUDA present (auto-device paths), the GPU-marked tests, a CUDA smoke of
#          `superconv train`, then `superconv train` with its defaults on full Fashion-MNIST (issue 5's
#          GPU figure)                                      -> $OUT/check.log, $OUT/train_metrics.json
#   bench  benchmarks/time_to_accuracy.py, 5 seeds, all recipes (issue 6's table), and the EMA's per-update
#          host cost (benchmarks/ema_update.py)  -> $OUT/time_to_accuracy.{json,md}, $OUT/ema_update.json, bench.log
#   sweep  superconv's recipe only, 2 seeds per variant of width / epochs / batch / EMA / compile, to choose the
#          GPU default (recipes.GPU); SWEEP="..." replaces the variants -> $OUT/sweep.tar.gz, $OUT/sweep.log
#   defaults  benchmarks/defaults.py (issue 16) on the GPU             -> $OUT/defaults.{json,md}
#   images    benchmarks/own_images.py, and a pretrained mobilenet_v2 fine-tuned on its folder (issue 20)
# BENCH_ARGS="..." adds arguments to every time_to_accuracy.py call; PYTHON picks the interpreter (python3);
# WHEELS=none skips installing .whl/. A smoke test of this script on a CPU, here:
#   OUT=/tmp/out PYTHON=.venv/bin/python WHEELS=none SWEEP=width=8 \
#   BENCH_ARGS="--device cpu --subset 1024 --epochs 1 --seeds 1 --targets 50" bash benchmarks/device/run.sh sweep
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${1:?"usage: bash benchmarks/device/run.sh check|bench|sweep"}
OUT=${OUT:-/tmp/superconv-device-out}
mkdir -p "$OUT"
[ -d .data/fashion-mnist ] || { echo "run: .data/fashion-mnist is missing: run benchmarks/device/prepare.sh here and carry .data" >&2; exit 2; }
py=${PYTHON:-python3}
if [ "${WHEELS:-}" != none ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
data=.data/fashion-mnist
read -ra extra <<<"${BENCH_ARGS:-}"
"$py" - <<'PY'
import sys, torch, torchvision
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"cuda {torch.version.cuda}, device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
PY

case "$stage" in
check)
    # Every step runs even when an earlier one fails (one call is all there may be); the stage fails at the end.
    failed=()
    step() { echo "== $*"; "$@" || { echo "== FAILED (exit $?): $*"; failed+=("$*"); }; }
    {
        step "$py" -m pytest -q -n 8 -p no:cacheprovider tests
        step "$py" -m pytest -q -p no:cacheprovider -m gpu tests -rs
        step "$py" -m superconv train --data-dir "$data" --subset 6000 --epochs 2 --out /tmp/smoke --no-progress
        step "$py" -m superconv train --data-dir "$data" --out /tmp/train --no-progress
        [ -f /tmp/train/metrics.json ] && cp /tmp/train/metrics.json "$OUT/train_metrics.json"
        echo "== check: ${#failed[@]} step(s) failed${failed:+: ${failed[*]}}"
    } > >(tee "$OUT/check.log") 2>&1
    [ "${#failed[@]}" -eq 0 ]
    ;;
bench)
    "$py" benchmarks/time_to_accuracy.py --data-dir "$data" --seeds 5 --workers 8 \
        --out "$OUT/time_to_accuracy.json" "${extra[@]}" 2>&1 | tee "$OUT/bench.log"
    "$py" benchmarks/ema_update.py --out "$OUT/ema_update.json" 2>&1 | tee -a "$OUT/bench.log"
    ;;
sweep)
    variants=${SWEEP:-"width=48 width=64,ema=none width=64,compile=true width=64,epochs=8 width=64,epochs=12 width=64,batch_size=1024 width=96,epochs=8"}
    mkdir -p /tmp/sweep
    for v in $variants; do
        sets=()
        IFS=',' read -ra kvs <<<"$v"
        for kv in "${kvs[@]}"; do sets+=(--set "$kv"); done
        "$py" benchmarks/time_to_accuracy.py --data-dir "$data" --recipes superconv --seeds 2 "${sets[@]}" "${extra[@]}" \
            --out "/tmp/sweep/${v//[=,]/_}.json" 2>&1 | tee -a "$OUT/sweep.log" | grep -E '^\| superconv|^seed' || true
    done
    tar -czf "$OUT/sweep.tar.gz" -C /tmp sweep
    ;;
defaults)
    # Issue 16 on a GPU: `superconv train` with no tuning options on Fashion-MNIST, digits and an image folder.
    "$py" benchmarks/defaults.py --source "$data" --formats measured --budgets "30,60" \
        --out "$OUT/defaults.json" 2>&1 | tee "$OUT/defaults.log"
    ;;
images)
    # Issue 20 on a GPU: the image-folder benchmark, and the seed's case: a mobilenet_v2 fine-tuned on a folder
    # (its state dict saved here as the stand-in for ImageNet weights: the machine has no network).
    "$py" benchmarks/own_images.py --source "$data" --out "$OUT/own_images" 2>&1 | tee "$OUT/images.log"
    "$py" -c "import torch, torchvision; torch.save(torchvision.models.mobilenet_v2().state_dict(), '/tmp/mnv2.pt')"
    "$py" benchmarks/own_images.py --source "$data" --runs imagefolder-splits --extra "--model mobilenet_v2 \
        --pretrained /tmp/mnv2.pt" --out "$OUT/finetune" 2>&1 | tee -a "$OUT/images.log"
    ;;
*)
    echo "run: unknown stage '$stage': expected check, bench, sweep, defaults or images" >&2
    exit 2
    ;;
esac
