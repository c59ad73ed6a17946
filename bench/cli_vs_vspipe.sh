#!/usr/bin/env bash
# The same job through the CLI and through vspipe | ffmpeg (issue 17 item 19): a model on the CPU, libx264
# CRF 18, alternating runs; prints wall, user and system CPU seconds, minor page faults and the largest process's
# peak RSS for each, then the medians. Results go to docs/BENCHMARKS.md.
#   MODEL=espcn-x2, PRECISION=auto, ROUNDS=3,
#   CLIP=clip.mp4 (default: a generated H.264 clip of SIZE=640x360 and FRAMES=120),
#   BEFORE=<git revision>: also run that revision's CLI (exported with git archive) for a before/after row.
# Needs GNU time (/usr/bin/time), ffmpeg and the venv's vspipe (`vapoursynth config` done once).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${PYTHON:-.venv/bin/python}")  # -s: keep the venv's link
VSPIPE=${VSPIPE:-$(dirname "$PY")/vspipe}
ROUNDS=${ROUNDS:-3}
MODEL=${MODEL:-espcn-x2}
PRECISION=${PRECISION:-auto}
SIZE=${SIZE:-640x360}
FRAMES=${FRAMES:-120}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$PWD

clip=${CLIP:-$work/clip.mp4}
if [ -z "${CLIP:-}" ]; then
  "$PY" -c "import sys; from vidsr.tools.sample import ClipSpec, write_clip
width, height = map(int, sys.argv[2].split('x'))
write_clip(sys.argv[1], ClipSpec(width=width, height=height, frames=int(sys.argv[3])))" "$clip" "$SIZE" "$FRAMES"
fi
clip=$(realpath "$clip")

declare -A tree=([cli]=$here)
if [ -n "${BEFORE:-}" ]; then
  mkdir "$work/before"
  git archive "$BEFORE" | tar -x -C "$work/before"
  tree[cli_before]=$work/before
fi

measure() {  # NAME COMMAND...: one run, one "NAME wall user sys faults rss" line
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %R %M" -o "$work/time" "$@" >/dev/null 2>"$work/log" \
    || { cat "$work/log" >&2; exit 1; }
  echo "$name $(cat "$work/time")" | tee -a "$work/results"
}

cli() {  # TREE; run from there, since `python -m` puts the working folder first on the import path
  cd "$1" && PYTHONPATH="$1:$1/plugins" "$PY" -m vidsr upscale "$clip" -o "$work/cli.mp4" -m "$MODEL" --device cpu \
    --precision "$PRECISION" --crf 18 --overwrite -q
}

vspipe_ffmpeg() {
  PYTHONPATH="$here:$here/plugins" "$VSPIPE" -c y4m -a "path=$clip" -a "model=$MODEL" -a "precision=$PRECISION" \
    plugins/examples/upscale_encode.vpy - \
    | ffmpeg -v error -y -i pipe: -c:v libx264 -crf 18 "$work/vspipe.mp4"
}

export clip work here PY VSPIPE MODEL PRECISION
export -f cli vspipe_ffmpeg
echo "name wall_s user_s sys_s minor_faults max_rss_kb"
for _ in $(seq "$ROUNDS"); do
  for name in "${!tree[@]}"; do
    measure "$name" bash -c 'cli "$1"' _ "${tree[$name]}"
  done
  measure vspipe_ffmpeg bash -c vspipe_ffmpeg
done

echo "medians of $ROUNDS:"
"$PY" - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
for name, runs in sorted(rows.items()):
    print(name, *(f"{statistics.median(column):g}" for column in zip(*runs, strict=True)))
PY
