#!/bin/sh
# Rebuild a shipped recognizer model from scratch (or resume): recognizer/training/build.sh ocr|det
# Runs in .venv-train (recognizer/training/requirements.txt). Checkpoints and rendered shards go
# to $WAYPOST_TRAIN_DIR (default ~/.cache/waypost-training/<model>); the result is copied into
# recognizer/models/. Niced, one TF thread: the machine is shared.
set -eu
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv-train/bin/python}"
model="${1:-}"
[ $# -gt 0 ] && shift
case "$model" in
  ocr)
    export WAYPOST_TRAIN_DIR="${WAYPOST_TRAIN_DIR:-$HOME/.cache/waypost-training/ocr}"
    # The decoder's plate-format prior, walked from the same generator's formats (a second).
    "$PY" -m recognizer.training.format_table
    # Phase 1: from scratch, cosine LR 1.5e-3 -> 1e-5 over 5000 steps of 32 (a quarter real crops).
    nice -n 10 "$PY" -m recognizer.training.ocr_train --steps 5000 --synth-shards 100 --real-shards 20 --no-export "$@"
    # Phase 2: resume at a lower LR with more real crops and 40 more synthetic shards, then export
    # (full int8 unless it loses > 2 points to fp32 on the held-out fold) into recognizer/models/.
    exec nice -n 10 "$PY" -m recognizer.training.ocr_train --steps 9000 --lr 5e-4 --real-frac 0.35 \
      --synth-shards 140 --synth-from 100 --real-shards 20 "$@"
    ;;
  det)
    # render the synthetic scene shards (skips shards already there), train (resumes), export
    export WAYPOST_TRAIN_DIR="${WAYPOST_TRAIN_DIR:-$HOME/.cache/waypost-training/detector}"
    nice -n 10 "$PY" -m recognizer.training.det_data render --shards "0:${DET_SHARDS:-24}"
    nice -n 10 "$PY" -m recognizer.training.det_train train "$@"
    exec nice -n 10 "$PY" -m recognizer.training.det_train export --out recognizer/models/detector.tflite
    ;;
  *)
    echo "usage: recognizer/training/build.sh ocr|det [training options]  (see --help)" >&2
    exit 2
    ;;
esac
