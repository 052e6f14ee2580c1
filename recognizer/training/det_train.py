"""Train and export the plate detector (TensorFlow/Keras; training only).

    python -m recognizer.training.det_train train --steps 6000 --minutes 100
    python -m recognizer.training.det_train export --out recognizer/models/detector.tflite

Checkpoints live outside the repo in $WAYPOST_TRAIN_DIR (default
~/.cache/waypost-training/detector); `train` resumes from the latest one and stops at --steps or
after --minutes, whichever comes first, so the same command finishes an interrupted run.
The learning-rate schedule is a function of the global step, so resuming does not change it.

Model: depthwise-separable backbone down to stride 32, a small FPN back to stride 4, one 13-channel
head (see recognizer/detector.py for the layout). Trained on 256x160 crops, exported fully
convolutional at 512x288, float32 (both ai-edge-litert and tflite-runtime 2.14 load it).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from recognizer.training import det_data  # noqa: E402

CROP_W, CROP_H = 256, 160
OUT_CH = 13


def _sep(x, ch, stride=1, name=None):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(ch, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU(name=name)(x)


def _lat(x, ch):
    x = layers.Conv2D(ch, 1, use_bias=False)(x)
    return layers.BatchNormalization()(x)


def _cbr(x, ch, stride=1):
    x = layers.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def build_model(h: int | None = None, w: int | None = None, batch_size: int | None = None) -> keras.Model:
    # Plain 3x3 convs at high resolution (narrow, and much faster to train on CPU than depthwise),
    # depthwise-separable blocks from stride 8 down, a small FPN back to stride 4.
    inp = keras.Input((h, w, 3), batch_size=batch_size)
    x = _cbr(inp, 12, 2)
    x = _cbr(x, 16, 2)
    c4 = _cbr(x, 24)  # stride 4
    c8 = _sep(_cbr(c4, 32, 2), 32)  # stride 8
    c16 = _sep(_sep(_sep(c8, 64, 2), 64), 64)  # stride 16
    c32 = _sep(_sep(c16, 96, 2), 96)  # stride 32
    p = _lat(c32, 48)
    p = layers.Add()([_lat(c16, 48), layers.UpSampling2D(2)(p)])
    p = _sep(p, 48)
    p = layers.Add()([_lat(c8, 32), layers.UpSampling2D(2)(_lat(p, 32))])
    p = _sep(p, 32)
    p = layers.Add()([_lat(c4, 32), layers.UpSampling2D(2)(_lat(p, 32))])
    p = _sep(p, 32)
    heat = layers.Conv2D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(-2.19))(_sep(p, 32))
    reg = layers.Conv2D(OUT_CH - 1, 1)(_sep(p, 32))
    out = layers.Concatenate()([heat, reg])
    return keras.Model(inp, out, name="plate_centernet")


def loss_fn(pred, t, is_real):
    """CenterNet focal loss on the heatmap + L1 on offsets/sizes/corners at the centre cells."""
    eps = 1e-5
    p = tf.clip_by_value(pred[..., 0], eps, 1 - eps)
    gt = t[..., 0]
    pos = tf.cast(gt >= 1.0, tf.float32)
    neg_w = tf.pow(1 - gt, 4)
    # real photos label one plate only: don't punish confident peaks far from the label
    real = tf.reshape(is_real, (-1, 1, 1))
    unlabelled = real * tf.cast(p > 0.3, tf.float32) * tf.cast(gt < 0.05, tf.float32)
    neg_w = neg_w * (1 - unlabelled)
    pos_loss = -tf.math.log(p) * tf.pow(1 - p, 2) * pos
    neg_loss = -tf.math.log(1 - p) * tf.pow(p, 2) * neg_w * (1 - pos)
    n_pos = tf.maximum(tf.reduce_sum(pos), 1.0)
    heat_loss = (tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / n_pos
    w = t[..., 1]
    wsum = tf.maximum(tf.reduce_sum(w), 1e-3)
    off = tf.reduce_sum(tf.abs(pred[..., 1:3] - t[..., 2:4]), axis=-1)
    size = tf.reduce_sum(tf.abs(pred[..., 3:5] - t[..., 4:6]), axis=-1)
    cw = w * (1 - real)  # real labels are axis-aligned boxes, not corners
    corners = tf.reduce_sum(tf.abs(pred[..., 5:13] - t[..., 6:14]), axis=-1)
    reg_loss = (tf.reduce_sum(off * w) + tf.reduce_sum(size * w) * 2.0) / wsum + tf.reduce_sum(
        corners * cw
    ) / tf.maximum(tf.reduce_sum(cw), 1e-3) * 2.0
    return heat_loss + reg_loss, heat_loss, reg_loss


def lr_at(step, total, peak=2e-3, warmup=300):
    step = tf.cast(step, tf.float32)
    warm = peak * (step + 1) / warmup
    cos = 0.5 * peak * (1 + tf.cos(np.pi * tf.minimum(step / total, 1.0))) + 1e-5
    return tf.where(step < warmup, warm, cos)


def train(args):
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tdir = det_data.train_dir()
    tdir.mkdir(parents=True, exist_ok=True)
    model = build_model(CROP_H, CROP_W)
    opt = keras.optimizers.Adam(learning_rate=1e-3)
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=model, opt=opt, step=step)
    mgr = tf.train.CheckpointManager(ckpt, str(tdir / "ckpt"), max_to_keep=3)
    if mgr.latest_checkpoint:
        ckpt.restore(mgr.latest_checkpoint)
        print(f"resumed from {mgr.latest_checkpoint} at step {int(step.numpy())}", flush=True)
    print(f"params: {model.count_params()}", flush=True)

    real = []
    if not args.no_real:
        for region in ("us", "eu", "br"):
            got = det_data.real_samples(region, holdout=False)
            # the US fixed cameras are the product's case: show them more often
            real += got * (3 if region == "us" else 1)
    synth = det_data.load_shards()
    print(f"synthetic scenes: {len(synth)}, real (weighted): {len(real)}", flush=True)
    if not synth:
        raise SystemExit("no rendered shards yet: run `python -m recognizer.training.det_data render` first")
    rng = np.random.default_rng(int(step.numpy()) + 1)
    gen = det_data.batches(rng, synth, real, args.batch, CROP_W, CROP_H, real_frac=args.real_frac)

    @tf.function(reduce_retracing=True)
    def train_step(x, t, r):
        opt.learning_rate.assign(lr_at(step, args.steps, peak=args.lr))
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss, hl, rl = loss_fn(pred, t, r)
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)
        return loss, hl, rl

    t0 = time.time()
    last_save, last_reload = t0, int(step.numpy())
    hist = []
    while int(step.numpy()) < args.steps:
        x, t, r = next(gen)
        loss, hl, rl = train_step(x, t, r)
        hist.append((float(loss), float(hl), float(rl)))
        s = int(step.numpy())
        if s % 50 == 0:
            m = np.mean(hist, axis=0)
            hist = []
            el = time.time() - t0
            print(
                f"step {s} loss {m[0]:.3f} heat {m[1]:.3f} reg {m[2]:.3f} "
                f"lr {float(opt.learning_rate.numpy()):.2e} {el / 60:.1f} min",
                flush=True,
            )
        if s - last_reload >= 400:  # pick up shards the renderer finished meanwhile
            more = det_data.load_shards()
            if len(more) > len(synth):
                synth[:] = more
                print(f"synthetic scenes: {len(synth)}", flush=True)
            last_reload = s
        if time.time() - last_save > 300:
            mgr.save()
            last_save = time.time()
        if args.minutes and time.time() - t0 > args.minutes * 60:
            print("time budget reached", flush=True)
            break
    mgr.save()
    print(f"saved at step {int(step.numpy())}", flush=True)


def export(args):
    tdir = det_data.train_dir()
    model = build_model(CROP_H, CROP_W)
    ckpt = tf.train.Checkpoint(model=model)
    latest = tf.train.latest_checkpoint(str(tdir / "ckpt"))
    if not latest:
        raise SystemExit(f"no checkpoint in {tdir / 'ckpt'}")
    ckpt.restore(latest).expect_partial()
    fixed = build_model(det_data.IN_H, det_data.IN_W, batch_size=1)
    fixed.set_weights(model.get_weights())
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if args.float16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    data = conv.convert()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"exported {latest} -> {out} ({len(data)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--minutes", type=float, default=0, help="stop (and checkpoint) after this long")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--real-frac", type=float, default=0.3)
    t.add_argument("--no-real", action="store_true", help="synthetic scenes only")
    e = sub.add_parser("export")
    e.add_argument("--out", default="recognizer/models/detector.tflite")
    e.add_argument("--float16", action="store_true")
    args = ap.parse_args()
    {"train": train, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
