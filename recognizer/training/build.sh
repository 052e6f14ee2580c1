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
    exec nice -n 10 "$PY" -m recognizer.training.ocr_train "$@"
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
