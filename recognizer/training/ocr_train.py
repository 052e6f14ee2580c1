"""Train, export and check the plate OCR (conv CRNN + CTC, 40x128 grayscale).

    python -m recognizer.training.ocr_train [--steps N] [--export-only]

Work dir: $WAYPOST_TRAIN_DIR/ocr (default ~/.cache/waypost-training/ocr) holds the rendered
shards, the checkpoint (weights, optimizer state, step) and the exported candidates; a rerun
resumes from the checkpoint and re-uses the shards. Only the final .tflite and its .json are
copied into recognizer/models/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

from recognizer.ocr import PlateOCR

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from recognizer.formats import ALPHABET  # noqa: E402
from recognizer.ocr import greedy_decode, preprocess  # noqa: E402
from recognizer.training import ocr_data  # noqa: E402
from recognizer.training.ocr_data import INPUT_H, INPUT_W, STATES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "recognizer" / "models"
NUM_CLASSES = len(ALPHABET) + 1


def work_dir() -> Path:
    base = Path(os.environ.get("WAYPOST_TRAIN_DIR", Path.home() / ".cache" / "waypost-training" / "ocr"))
    base.mkdir(parents=True, exist_ok=True)
    return base


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def build_model(batch=None):
    import keras  # noqa: PLC0415 (start-up cost: TensorFlow, which the renderer's worker processes never load)
    from keras import layers  # noqa: PLC0415 (start-up cost: as keras)

    def cbr(x, c, k=3, padding="same"):
        x = layers.Conv2D(c, k, padding=padding, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    x_in = keras.Input((INPUT_H, INPUT_W, 1), batch_size=batch, name="image")
    x = cbr(x_in, 32)
    x = layers.MaxPool2D(2)(x)  # 20x64
    x = cbr(x, 48)
    x = layers.MaxPool2D(2)(x)  # 10x32
    x = cbr(x, 80)
    x = cbr(x, 80)
    x = layers.MaxPool2D((2, 1))(x)  # 5x32
    x = cbr(x, 112)
    x = layers.MaxPool2D((2, 1))(x)  # 2x32
    x = cbr(x, 160, k=(x.shape[1], 1), padding="valid")  # collapse height: one 160-d column per 4 px
    for _ in range(2):  # sequence context along the plate (conv-only)
        y = cbr(x, 160, k=(1, 3))
        x = layers.Add()([x, y])
    chars = layers.Conv2D(NUM_CLASSES, 1, name="chars_conv")(x)
    chars = layers.Reshape((INPUT_W // 4, NUM_CLASSES), name="chars")(chars)
    s = layers.GlobalAveragePooling2D()(x)
    state = layers.Dense(len(STATES), name="state")(s)
    return keras.Model(x_in, [chars, state], name="plate_ocr")


class ShardPool:
    """Samples from the shards on disk; new shards are picked up as the workers write them."""

    def __init__(self, directory: Path, kind: str):
        self.dir, self.kind = directory, kind
        self.loaded: set[str] = set()
        self.shards: list[dict] = []
        self.index: list[int] = []  # each loaded shard's number (its seed)

    def refresh(self):
        new = sorted(
            p for p in self.dir.glob(f"{self.kind}_*.npz") if p.name not in self.loaded and ".tmp" not in p.name
        )
        for p in new:
            try:
                shard = ocr_data.load_shard(p)
            except Exception:  # being written; next refresh
                continue
            self.loaded.add(p.name)
            self.shards.append(shard)
            self.index.append(int(p.stem.split("_")[1]))
        return len(self.loaded)

    def fresh(self, lo: int, hi: int) -> list[int]:
        """Positions of the loaded shards numbered lo <= i < hi."""
        return [k for k, i in enumerate(self.index) if lo <= i < hi]

    def __len__(self):
        return sum(len(s["x"]) for s in self.shards)

    def sample(self, rng, n, among: list[int] | None = None):
        ks = rng.integers(0, len(self.shards), n) if not among else rng.choice(among, n)
        picks = [(self.shards[k], int(rng.integers(0, len(self.shards[k]["x"])))) for k in ks]
        return {key: np.stack([sh[key][j] for sh, j in picks]) for key in ("x", "y", "n", "s")}


def _augment_batch(rng, x):
    """Cheap extra variation on preprocessed uint8 samples, so repeated shards don't repeat exactly."""
    x = x.astype(np.float32) / 255.0
    b = x.shape[0]
    # random horizontal shift by up to 4 px and vertical by up to 2 (edge-replicated)
    out = np.empty_like(x)
    for i in range(b):
        dx, dy = rng.integers(-4, 5), rng.integers(-2, 3)
        out[i] = np.roll(np.roll(x[i], dx, axis=1), dy, axis=0)
    gamma = rng.uniform(0.7, 1.4, (b, 1, 1)).astype(np.float32)
    out = np.power(np.clip(out, 1e-4, 1), gamma)
    inv = rng.random(b) < 0.04  # polarity flips: light-on-dark plates exist
    out[inv] = 1.0 - out[inv]
    return out[..., None]


def _eval_keras(model, items, batch=64):
    xs = np.stack([preprocess(ocr_data.real_view(it), INPUT_H, INPUT_W) for it in items])[..., None]
    chars, _ = model.predict(xs, batch_size=batch, verbose=0)
    probs = _softmax(chars)
    reads = [greedy_decode(p)[0] for p in probs]
    return float(np.mean([r == it["text"] for r, it in zip(reads, items)]))


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def train(args):
    import tensorflow as tf  # noqa: PLC0415 (start-up cost: TensorFlow, not in the renderer's workers)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    wd = work_dir()
    shard_dir = wd / "shards"
    shard_dir.mkdir(exist_ok=True)

    done = wd / "ckpt" / "state.json"
    if done.exists() and json.loads(done.read_text())["step"] >= args.steps:
        log(f"checkpoint is already at step >= {args.steps}; nothing to train")
        return None
    # Renderer workers fill the shard dir in the background (skipping what exists).
    jobs = [("real", i, str(shard_dir)) for i in range(args.real_shards)]
    jobs += [("synth", i, str(shard_dir)) for i in range(args.synth_shards)]
    jobs += [("synth", ocr_data.INTL_BASE + i, str(shard_dir)) for i in range(args.intl_shards)]
    # interleave so real data arrives early; --synth-from renders the newest shards first
    jobs.sort(
        key=lambda j: (j[0] == "synth" and j[1] < args.synth_from, j[1] % ocr_data.INTL_BASE // 4, j[0] != "real")
    )
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(args.workers, initializer=ocr_data._nice_worker)
    _pending = pool.imap_unordered(ocr_data.write_shard, jobs)  # the workers fill the shard directory

    synth, real = ShardPool(shard_dir, "synth"), ShardPool(shard_dir, "real")
    while synth.refresh() < 2 or real.refresh() < 1:
        log(f"waiting for shards (synth {len(synth.loaded)}, real {len(real.loaded)})")
        time.sleep(20)

    model = build_model()
    opt = tf.keras.optimizers.Adam(learning_rate=1e-3, clipnorm=5.0)
    ckpt_dir = wd / "ckpt"
    ckpt_dir.mkdir(exist_ok=True)
    state_file = ckpt_dir / "state.json"
    step = 0
    opt.build(model.trainable_variables)
    if state_file.exists():
        st = json.loads(state_file.read_text())
        model.load_weights(ckpt_dir / "model.weights.h5")
        with np.load(ckpt_dir / "opt.npz") as z:
            for v, k in zip(opt.variables, sorted(z.files, key=lambda s: int(s[1:]))):
                v.assign(z[k])
        step = int(st["step"])
        log(f"resumed from step {step}")

    T = INPUT_W // 4

    def cosine(s, start, end, peak, warm):
        if s - start < warm:
            return 1e-5 + (peak - 1e-5) * (s - start + 1) / warm
        p = min(1.0, (s - start - warm) / max(1, end - start - warm))
        return 1e-5 + 0.5 * (peak - 1e-5) * (1 + np.cos(np.pi * p))

    def lr_at(s):
        # One cosine from --lr over the first phase; a fine-tuning phase (--finetune-from) warms
        # up again to --finetune-lr and decays to the end.
        ft = args.finetune_from
        if ft and s >= ft:
            return cosine(s, ft, args.steps, args.finetune_lr, 200)
        return cosine(s, 0, ft or args.steps, args.lr, 300)

    @tf.function(reduce_retracing=True)
    def train_step(x, y, n, s, lr):
        opt.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            chars, state = model(x, training=True)
            ctc = tf.nn.ctc_loss(
                labels=y,
                logits=chars,
                label_length=n,
                logit_length=tf.fill([tf.shape(x)[0]], T),
                logits_time_major=False,
                blank_index=0,
            )
            ctc = tf.reduce_mean(ctc)
            known = tf.cast(s >= 0, tf.float32)
            sce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(s, 0), logits=state)
            st_loss = tf.reduce_sum(sce * known) / tf.maximum(tf.reduce_sum(known), 1.0)
            loss = ctc + args.state_weight * st_loss
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return ctc, st_loss

    def save():
        tmp = ckpt_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        model.save_weights(tmp / "model.weights.h5")
        np.savez(tmp / "opt.npz", **{f"v{i}": v.numpy() for i, v in enumerate(opt.variables)})
        for f in ("model.weights.h5", "opt.npz"):
            os.replace(tmp / f, ckpt_dir / f)
        state_file.write_text(json.dumps({"step": step, "lr": float(lr_at(step)), "time": time.time()}))

    holdout = ocr_data.load_real("holdout")
    rng = np.random.default_rng(12345 + step)
    t0, seen, losses = time.time(), 0, []
    n_real = int(round(args.batch * args.real_frac))
    fresh = synth.fresh(args.synth_from, ocr_data.INTL_BASE)
    while step < args.steps:
        if step % 50 == 0:
            synth.refresh()
            real.refresh()
            fresh = synth.fresh(args.synth_from, ocr_data.INTL_BASE)  # the new shards loaded so far
        n_synth = args.batch - n_real
        tuning = args.finetune_from and step >= args.finetune_from
        if tuning and len(fresh) >= 4:  # the fine-tuning phase draws half its synthetic plates from the new shards
            a = synth.sample(rng, n_synth // 2, fresh)
            a2 = synth.sample(rng, n_synth - n_synth // 2)
            a = {k: np.concatenate([a[k], a2[k]]) for k in a}
        else:
            a = synth.sample(rng, n_synth)
        b = real.sample(rng, n_real)
        x = _augment_batch(rng, np.concatenate([a["x"], b["x"]]))
        y = np.concatenate([a["y"], b["y"]])
        n = np.concatenate([a["n"], b["n"]])
        s = np.concatenate([a["s"], b["s"]])
        ctc, sl = train_step(
            tf.constant(x), tf.constant(y), tf.constant(n), tf.constant(s), tf.constant(lr_at(step), tf.float32)
        )
        losses.append((float(ctc), float(sl)))
        step += 1
        seen += len(x)
        if step % 100 == 0:
            lc = np.mean([loss[0] for loss in losses[-100:]])
            ls = np.mean([loss[1] for loss in losses[-100:]])
            log(
                f"step {step} ctc {lc:.3f} state {ls:.3f} lr {lr_at(step):.2e} "
                f"{seen / (time.time() - t0):.0f} samples/s shards synth {len(synth.loaded)} real {len(real.loaded)}"
            )
        if step % args.save_every == 0 or step == args.steps:
            save()
        if step % args.eval_every == 0 or step == args.steps:
            us = [it for it in holdout if it["file"].startswith("openalpr-us/crops")]
            log(
                f"step {step} holdout exact (keras greedy): us-crops {_eval_keras(model, us):.3f} "
                f"all-holdout {_eval_keras(model, holdout):.3f} (n={len(us)}/{len(holdout)})"
            )
    save()
    pool.terminate()
    return model


def export(args):
    """Convert the checkpoint to full-int8 and fp32 TFLite, compare both on the held-out fold,
    and install the chosen one into recognizer/models/."""
    import tensorflow as tf  # noqa: PLC0415 (start-up cost: TensorFlow, not in the renderer's workers)

    wd = work_dir()
    trained = build_model()
    trained.load_weights(wd / "ckpt" / "model.weights.h5")
    m1 = build_model(batch=1)
    m1.set_weights(trained.get_weights())
    step = json.loads((wd / "ckpt" / "state.json").read_text())["step"]

    shard_dir = wd / "shards"
    reps = []
    for kind, k in (("synth", 3), ("real", 1)):
        for p in sorted(shard_dir.glob(f"{kind}_*.npz"))[:k]:
            reps.append(ocr_data.load_shard(p)["x"][:100])
    rep = np.concatenate(reps).astype(np.float32) / 255.0

    def rep_data():
        for im in rep:
            yield [im[None, :, :, None]]

    out = wd / "export"
    out.mkdir(exist_ok=True)
    conv = tf.lite.TFLiteConverter.from_keras_model(m1)
    (out / "ocr_fp32.tflite").write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(m1)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / "ocr_int8.tflite").write_bytes(conv.convert())
    meta = {
        "alphabet": ALPHABET,
        "blank": 0,
        "input_height": INPUT_H,
        "input_width": INPUT_W,
        "states": STATES,
        "train_step": step,
        "preprocess": f"gray (BT.601), resize to {INPUT_W}x{INPUT_H} (INTER_AREA when shrinking), "
        "stretch 2nd-98th percentile to [0,1]",
    }
    for name in ("ocr_fp32", "ocr_int8"):
        (out / f"{name}.json").write_text(json.dumps(meta, indent=1))
    log(
        f"exported step {step}: fp32 {(out / 'ocr_fp32.tflite').stat().st_size} B, "
        f"int8 {(out / 'ocr_int8.tflite').stat().st_size} B"
    )

    # Check both with the runtime code (ai_edge_litert here) on the held-out fold.

    holdout = [it for it in ocr_data.load_real("holdout") if it["file"].startswith("openalpr-us/crops")]
    res = {}
    for name in ("ocr_fp32", "ocr_int8"):
        ocr = PlateOCR(out / f"{name}.tflite")
        res[name] = float(np.mean([ocr.read(ocr_data.real_view(it)).text == it["text"] for it in holdout]))
    log(f"held-out US crops exact match (tflite, beam): {res}")
    choice = args.variant
    if choice == "auto":
        choice = "int8" if res["ocr_int8"] >= res["ocr_fp32"] - 0.02 else "fp32"
    if args.install:
        shutil.copy(out / f"ocr_{choice}.tflite", MODELS / "ocr.tflite")
        meta["variant"] = choice
        (MODELS / "ocr.json").write_text(json.dumps(meta, indent=1) + "\n")
        log(f"installed {choice} -> {MODELS / 'ocr.tflite'}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=9000, help="total optimizer steps (resumes up to this)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--real-frac", type=float, default=0.25, help="share of each batch from real train-fold crops")
    ap.add_argument("--state-weight", type=float, default=0.1)
    ap.add_argument("--synth-shards", type=int, default=160, help=f"synthetic shards of {ocr_data.SHARD_SIZE}")
    ap.add_argument(
        "--intl-shards",
        type=int,
        default=0,
        help="synthetic EU/Brazilian plate shards (intl_plates.py), numbered from INTL_BASE",
    )
    ap.add_argument("--real-shards", type=int, default=20, help="augmented real-crop shards")
    ap.add_argument(
        "--synth-from",
        type=int,
        default=0,
        help="render synthetic shards from this index first; in a fine-tuning phase, half of "
        "each batch's synthetic plates come from these new shards",
    )
    ap.add_argument(
        "--finetune-from",
        type=int,
        default=0,
        help="the step where a fine-tuning phase begins (the first phase's cosine ends there)",
    )
    ap.add_argument("--finetune-lr", type=float, default=4e-4, help="peak learning rate of the fine-tuning phase")
    ap.add_argument("--workers", type=int, default=1, help="renderer processes")
    ap.add_argument("--threads", type=int, default=1, help="TF intra-op threads")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--variant", choices=["auto", "int8", "fp32"], default="auto")
    ap.add_argument(
        "--no-install", dest="install", action="store_false", help="export but keep recognizer/models as is"
    )
    ap.add_argument("--no-export", dest="export", action="store_false", help="train only (a first phase)")
    args = ap.parse_args(argv)
    if not args.export_only:
        train(args)
    if args.export:
        export(args)


if __name__ == "__main__":
    sys.exit(main())
