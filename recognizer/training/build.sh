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
    # Phase 1, from scratch: cosine LR 1.5e-3 -> 1e-5 over 24000 steps of 32 (a quarter of each
    # batch real train-fold crops), 300 US and 40 EU/Brazilian synthetic shards rendered alongside.
    # About 1.5 h on this 2-core machine when it is otherwise idle.
    nice -n 10 "$PY" -m recognizer.training.ocr_train --steps 24000 --synth-shards 300 --intl-shards 40 \
      --real-shards 40 --no-export "$@"
    # Phases 2 and 3, fine-tuning: 100 more US shards (300-399), which supply half of each batch's
    # synthetic plates, LR warmed up again to 4e-4 and decayed to 1e-5 at step 32000 (about 15-25
    # min); then 60 more (400-459) likewise, 3e-4, to step 38000 (about 12 min). Then export (full
    # int8 unless it loses > 2 points to fp32 on the held-out fold) into recognizer/models/. Every
    # phase resumes from the checkpoint.
    nice -n 10 "$PY" -m recognizer.training.ocr_train --steps 32000 --finetune-from 24000 --finetune-lr 4e-4 \
      --synth-shards 400 --synth-from 300 --intl-shards 40 --real-shards 40 --no-export "$@"
    exec nice -n 10 "$PY" -m recognizer.training.ocr_train --steps 38000 --finetune-from 32000 --finetune-lr 3e-4 \
      --synth-shards 460 --synth-from 400 --intl-shards 40 --real-shards 40 "$@"
    ;;
  det)
    # render the synthetic scene shards (skips shards already there; about 15 s each), train
    # (resumes; 24000 steps of 16 at about 5 steps/s: 80 min on this 2-core machine), export
    export WAYPOST_TRAIN_DIR="${WAYPOST_TRAIN_DIR:-$HOME/.cache/waypost-training/detector}"
    nice -n 10 "$PY" -m recognizer.training.det_data render --shards "0:${DET_SHARDS:-60}"
    nice -n 10 "$PY" -m recognizer.training.det_train train --steps 24000 "$@"
    exec nice -n 10 "$PY" -m recognizer.training.det_train export --out recognizer/models/detector.tflite
    ;;
  *)
    echo "usage: recognizer/training/build.sh ocr|det [training options]  (see --help)" >&2
    exit 2
    ;;
esac
