#!/usr/bin/env bash
# One session on a CUDA machine, sized for a short lease: the `vidsr bench` runs of the GPU targets on an idle
# GPU, then time-budgeted training of the models that need a GPU (several runs share it), with the CUDA tests
# running beside the training. Everything it measures or trains lands in RESULTS_DIR.
#
#   bench/gpu_session.sh RESULTS_DIR SECONDS
#
# SECONDS is the wall-clock budget of the whole script. Training images: data/train/{t91,bsds500_train},
# validation: data/eval/Set5 (see ../shared/data/SOURCES.md; T91 as lossless WebP fits a 64 MiB upload with the
# PyAV and VapourSynth wheels); PYTHON (default python3) must import vidsr, torch and av, and vspipe must be
# on PATH for the VapourSynth tests.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); budget=$2; start=$SECONDS
py=${PYTHON:-python3}
left() { echo $((budget - (SECONDS - start))); }
say() { echo "[$((SECONDS - start))s] $*" | tee -a "$out/session.log"; }
mkdir -p "$out" runs/models
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$out/session.log" 2>&1
$py -c 'import torch, av; print("torch", torch.__version__, "av", av.__version__, torch.cuda.get_device_name())' \
  >>"$out/session.log" 2>&1

# ---- benchmarks, GPU otherwise idle ----------------------------------------------------------------------------
$py bench/random_models.py runs/models >/dev/null
nvenc() { $py -c "import av, fractions; c = av.codec.CodecContext.create('$1', 'w'); c.width = c.height = 256; \
c.pix_fmt = 'yuv420p'; c.time_base = fractions.Fraction(1, 24); c.open()" 2>/dev/null; }
h264=libx264; nvenc h264_nvenc && h264=h264_nvenc
hevc=libx265; nvenc hevc_nvenc && hevc=hevc_nvenc
say "encoders: $h264 $hevc"
bench() {  # skipped when fewer than TRAIN_SECONDS (default 300) would be left for training
  [ "$(left)" -gt "${TRAIN_SECONDS:-300}" ] || { say "skipped for time: bench $*"; return; }
  say "bench $*"
  timeout "${BENCH_TIMEOUT:-150}" $py "${VIDSR[@]}" bench --json "$@" >>"$out/bench.json" 2>>"$out/session.log" \
    || say "bench failed: $*"
}
VIDSR=(-m vidsr)
m=runs/models
# RRDBNet x4: cuDNN's algorithm search on (the default), then off, then fp16, then compiled
bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision bf16 -c "$hevc"
VIDSR=(-c "import sys, vidsr.compute.upscaler as u; u.CUDNN_AUTOTUNE = False; from vidsr.cli import main; sys.exit(main())")
bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision bf16 -c "$hevc"
VIDSR=(-m vidsr)
bench -m $m/srvgg_x4.safetensors --size 720x480 --frames 120 -b auto --precision fp16 -c "$h264"
bench -m espcn-x2 --size 1920x1080 --frames 96 -b 8 --precision fp16 -c libx264
bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision fp16 -c "$hevc"
BENCH_TIMEOUT=200 bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision bf16 -c "$hevc" \
  --compile

# ---- training, the runs sharing the GPU; the CUDA tests beside them ------------------------------------------------
data=(--train-dir data/train/t91 --train-dir data/train/bsds500_train --val-dir data/eval/Set5 --cache-dir runs/cache)
# The pair caches (MATLAB-bicubic LR of every image) are built before the runs' clocks start.
for spec in "4, 3" "3, 1"; do
  $py -c "from vidsr.train.data import PairCache
PairCache(['data/train/t91', 'data/train/bsds500_train'], $spec, 'runs/cache')" >/dev/null 2>&1 &
done
wait
window=$(($(left) - 45))  # seconds for the training runs; the rest packs the results
say "training for ${window}s"
train() {  # run name, arguments of `vidsr train`; each run gets the whole window less start-up and export
  timeout "$window" $py -m vidsr train --no-progress --minutes "$(awk -v w="$window" 'BEGIN { printf "%.2f", (w - 50) / 60 }')" \
    --out-dir "runs/$1" "${data[@]}" "${@:2}" >"runs/$1.log" 2>&1
}
export OMP_NUM_THREADS=2
train srresnet_x4 --config configs/srresnet_x4.toml &
train vdsr_x3 --config configs/vdsr_x3.toml &
say "CUDA tests"
timeout "$((window - 20))" $py -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_vapoursynth.py \
  tests/test_upscaler.py tests/test_engine.py >"$out/tests.log" 2>&1
say "tests exit $?"
wait
say "training done"

# ---- results: weights in fp16, logs, plots -------------------------------------------------------------------------
$py -c "import glob; from vidsr.models.checkpoint import store_half
for path in glob.glob('runs/*/*.safetensors'):
    if not path.startswith('runs/models/'): store_half(path)"  # one interpreter: torch imports are slow
pack() {  # archive name, then run names: each run's log, curves and best weights
  local archive=$1; shift
  local files=()
  for run in "$@"; do
    files+=("runs/$run.log")
    for f in log.csv plot.png best.safetensors; do [ -f "runs/$run/$f" ] && files+=("runs/$run/$f"); done
  done
  tar czf "$out/$archive.tgz" "${files[@]}" 2>>"$out/session.log"
}
pack trained srresnet_x4 vdsr_x3
say "done"
