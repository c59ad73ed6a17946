#!/usr/bin/env bash
# Engine throughput vs model-only vs a naive frame loop (issue targets: end to end >= 0.9x model only and
# >= 2x the naive loop for ESPCN x2 on 640x360 input). Run on an idle machine; results go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
device=${DEVICE:-auto}
$BIN/vidsr bench --model espcn-x2 --size 640x360 --frames 96 --batch-size 4 --device "$device" "$@"
