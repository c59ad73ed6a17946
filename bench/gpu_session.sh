#!/usr/bin/env bash
# One session on a CUDA machine, sized for a short lease: the `vidsr bench` runs of the GPU targets on an idle
# GPU, then time-budgeted training of the models that need a GPU (several runs share it), with the CUDA tests
# running beside the training. Everything it measures or trains lands in RESULTS_DIR.
#
#   bench/gpu_session.sh RESULTS_DIR SECONDS
#
# SECONDS is the wall-clock budget of the whole script. Training images: data/train/{t91,bsd200}, validation:
# data/eval/Set5 (see ../shared/data/SOURCES.md); PYTHON (default python3) must import vidsr, torch and av.
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
bench() {  # skipped when fewer than TRAIN_SECONDS (default 330) would be left for training
  [ "$(left)" -gt "${TRAIN_SECONDS:-330}" ] || { say "skipped for time: bench $*"; return; }
  say "bench $*"
  timeout 150 $py -m vidsr bench --json "$@" >>"$out/bench.json" 2>>"$out/session.log" || say "bench failed: $*"
}
m=runs/models
bench -m espcn-x2 --size 1920x1080 --frames 120 -b 8 --precision fp16 -c "$h264"
bench -m espcn-x2 --size 1920x1080 --frames 48 -b 8 --precision fp16 -c libx264
bench -m espcn-x2 --size 640x360 --frames 96 -b 4 --precision fp16 -c libx264
bench -m $m/srvgg_x4.safetensors --size 720x480 --frames 120 -b 8 --precision fp16 -c "$h264"
bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision bf16 -c "$hevc"
bench -m $m/rrdbnet_x2.safetensors --size 3840x2160 --frames 3 -b 1 --precision fp16 -c "$hevc" --max-memory 8
bench -m espcn-x2 --size 1920x1080 --frames 60 -b 8 --precision fp16 -c "$h264" --hwdec cuda
bench -m $m/srvgg_x4.safetensors --size 720x480 --frames 120 -b auto --precision fp16 -c "$h264"
bench -m $m/rrdbnet_x4.safetensors --size 1280x720 --frames 12 -b 2 --precision fp16 -c "$hevc"
bench -m $m/srvgg_x4.safetensors --size 720x480 --frames 120 -b 8 --precision fp16 -c "$h264" --compile

# ---- training, several runs sharing the GPU; the CUDA tests beside them ------------------------------------------
window=$(($(left) - 60))  # seconds for every training chain; the rest packs the results
say "training for ${window}s"
minutes() { awk -v w="$window" -v f="$1" -v o="$2" 'BEGIN { printf "%.2f", (w * f - o) / 60 }'; }
data=(--train-dir data/train/t91 --train-dir data/train/bsds500_train --val-dir data/eval/Set5 --cache-dir runs/cache)
train() {  # run name, minutes, arguments of `vidsr train`
  timeout "$(awk -v m="$2" 'BEGIN { print int(m * 60 + 60) }')" $py -m vidsr train --no-progress --minutes "$2" \
    --out-dir "runs/$1" "${data[@]}" "${@:3}" >"runs/$1.log" 2>&1
}
gan() {  # run name, minutes, stage-one run, config; starts from the stage's last weights, or its best if cut short
  local start_from="runs/$3/last.safetensors"
  [ -f "$start_from" ] || start_from="runs/$3/best.safetensors"
  timeout "$(awk -v m="$2" 'BEGIN { print int(m * 60 + 60) }')" $py -m vidsr.train.gan --no-progress \
    --minutes "$2" --out-dir "runs/$1" --pretrained "$start_from" --config "$4" "${data[@]}" \
    "${@:5}" >"runs/$1.log" 2>&1
}
export OMP_NUM_THREADS=1
# The cache of x4 RGB pairs is shared by two chains: build it once before they start.
$py -c "from vidsr.train.data import PairCache; PairCache(['data/train/t91', 'data/train/bsds500_train'], 4, 3, 'runs/cache')" \
  >/dev/null 2>&1
(train rrdbnet_x4_psnr "$(minutes 0.62 30)" --config configs/rrdbnet_x4_psnr.toml --batch-size 32 --lr 4e-4 \
   --val-every 2000
 gan rrdbnet_x4_esrgan "$(minutes 0.38 45)" rrdbnet_x4_psnr configs/rrdbnet_x4_esrgan_novgg.toml) &
(train srvgg_x4_psnr "$(minutes 0.45 30)" --config configs/srvgg_x4_psnr.toml --batch-size 32 --lr 5e-4 \
   --val-every 2000
 gan srvgg_x4_realesrnet "$(minutes 0.25 40)" srvgg_x4_psnr configs/srvgg_x4_realesrnet.toml \
   --degradation-workers 4
 gan srvgg_x4_realesrgan "$(minutes 0.30 40)" srvgg_x4_realesrnet configs/srvgg_x4_realesrgan.toml \
   --degradation-workers 4) &
small=(--batch-size 128 --threads 1 --val-every 5000)
train srvgg_x2 "$(minutes 1 40)" --config configs/srvgg_x2.toml --patch-size 32 "${small[@]}" &
for arch in espcn fsrcnn; do
  for scale in 2 3 4; do
    train "${arch}_x$scale" "$(minutes 1 40)" --config "configs/${arch}_x$scale.toml" --lr 5e-4 \
      --init-from "weights/${arch}_x$scale.safetensors" "${small[@]}" &
  done
done
say "CUDA tests"
timeout "$((window - 30))" $py -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_upscaler.py \
  tests/test_engine.py tests/test_train.py >"$out/tests.log" 2>&1
say "tests exit $?"
wait
say "training done"

# ---- results: weights in fp16, logs, plots -------------------------------------------------------------------------
$py -c "import glob; from vidsr.checkpoint import store_half
for path in glob.glob('runs/*/*.safetensors'):
    if not path.startswith('runs/models/'): store_half(path)"  # one interpreter: torch imports are slow
pack() {  # archive name, then run names; the GAN stages keep only their last weights, PSNR stages their best
  local archive=$1; shift
  local files=() weights
  for run in "$@"; do
    files+=("runs/$run.log")
    for f in log.csv gan_log.csv plot.png; do [ -f "runs/$run/$f" ] && files+=("runs/$run/$f"); done
    case $run in *esrgan|*realesr*) weights=last ;; *) weights=best ;; esac
    [ -f "runs/$run/$weights.safetensors" ] && files+=("runs/$run/$weights.safetensors")
  done
  tar czf "$out/$archive.tgz" "${files[@]}" 2>>"$out/session.log"
}
pack rrdbnet_psnr rrdbnet_x4_psnr
pack rrdbnet_gan rrdbnet_x4_esrgan
pack srvgg_x4 srvgg_x4_psnr srvgg_x4_realesrnet srvgg_x4_realesrgan
pack small srvgg_x2 espcn_x2 espcn_x3 espcn_x4 fsrcnn_x2 fsrcnn_x3 fsrcnn_x4
say "done"
