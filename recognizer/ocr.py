"""Plate OCR: a conv CRNN (TFLite, builtin ops only) read with CTC decoding in numpy.

The model sees one grayscale plate crop resized to a fixed size (recognizer/models/ocr.json) and
returns per-column character logits (CTC, blank = index 0) plus state logits. Decoding happens
here: a pruned CTC prefix beam search gives the text, its probability and the runner-up readings
that fuzzy search and hotlist matching use. TensorFlow is never imported.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .formats import ALPHABET, normalise
from .result import Alternative, PlateRead
from .runtime import load_model

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "ocr.tflite"
BLANK = 0  # CTC blank; characters are ALPHABET[i - 1]
MIN_ALTERNATIVES = 3


class CropError(ValueError):
    """The image given to the OCR is not a usable plate crop."""


def check_crop(crop) -> np.ndarray:
    """Validate a crop (HxW gray, HxWx3 RGB or HxWx4 RGBA, uint8); returns HxW or HxWx3."""
    if not isinstance(crop, np.ndarray):
        raise CropError(f"plate crop must be a numpy uint8 array, got {type(crop).__name__}")
    if crop.dtype != np.uint8:
        raise CropError(f"plate crop must be uint8 (0-255), got dtype {crop.dtype}; convert with .astype(np.uint8)")
    if crop.ndim == 3 and crop.shape[2] == 1:
        crop = crop[..., 0]
    elif crop.ndim == 3 and crop.shape[2] == 4:
        crop = crop[..., :3]
    if not (crop.ndim == 2 or (crop.ndim == 3 and crop.shape[2] == 3)):
        raise CropError(f"plate crop must be HxW or HxWx3, got shape {crop.shape}")
    if crop.shape[0] < 4 or crop.shape[1] < 8:
        raise CropError(f"plate crop is too small to read ({crop.shape[1]}x{crop.shape[0]} px; need at least 8x4)")
    return crop


def preprocess(crop, height: int, width: int) -> np.ndarray:
    """Crop -> float32 (height, width) in [0, 1], contrast-stretched. Training uses this too."""
    import cv2

    crop = check_crop(crop)
    h, w = crop.shape[:2]
    interp = cv2.INTER_AREA if (w > width or h > height) else cv2.INTER_LINEAR
    gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    small = cv2.resize(gray, (width, height), interpolation=interp).astype(np.float32)
    # Stretch between the 2nd and 98th percentile: night IR, low light and glare all land in range.
    flat = small.ravel()
    k_lo, k_hi = int(flat.size * 0.02), int(flat.size * 0.98)
    part = np.partition(flat, (k_lo, k_hi))
    lo, hi = float(part[k_lo]), float(part[k_hi])
    return np.clip((small - lo) / max(hi - lo, 16.0), 0.0, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def greedy_decode(probs: np.ndarray) -> tuple[str, list[float]]:
    """Best path: argmax per column, collapse repeats, drop blanks. Per-char confidence is the
    highest probability along the character's run of columns."""
    best = probs.argmax(axis=1)
    text, confs = [], []
    prev = BLANK
    for t, k in enumerate(best):
        if k != BLANK and k != prev:
            text.append(ALPHABET[k - 1])
            confs.append(float(probs[t, k]))
        elif k != BLANK and k == prev:
            confs[-1] = max(confs[-1], float(probs[t, k]))
        prev = k
    return "".join(text), confs


def _squeeze_blanks(probs: np.ndarray, sure: float = 0.995) -> np.ndarray:
    """Merge each run of near-certain blank columns into one column. Decoding is unchanged (a
    blank still separates repeats) and the beam search has about half the columns to visit."""
    keep, prev_sure = [], False
    for t, is_sure in enumerate(probs[:, BLANK] > sure):
        if not (is_sure and prev_sure):
            keep.append(t)
        prev_sure = is_sure
    return probs[keep]


def beam_decode(probs: np.ndarray, beam: int = 6, prune: float = 0.01, topk: int = 3) -> list[tuple[str, float]]:
    """CTC prefix beam search. Returns (text, probability) best first; a probability is the summed
    probability of all alignments of that text (only the `topk` symbols above `prune` per column
    are expanded, so it slightly undercounts)."""
    probs = _squeeze_blanks(probs)
    top = np.argsort(-probs, axis=1)[:, :topk]
    # Per column, the expanded symbols and their probabilities as plain Python numbers (fast loop).
    top_p = np.take_along_axis(probs, top, axis=1)
    columns = [[(k, p) for k, p in zip(ks, ps) if p > prune] for ks, ps in zip(top.tolist(), top_p.tolist())]
    beams = {(): (1.0, 0.0)}  # prefix -> (p ending in blank, p ending in non-blank)
    for cands in columns:
        if len(cands) == 1 and cands[0][0] == BLANK:
            pbl = cands[0][1]
            beams = {pre: ((pb + pnb) * pbl, 0.0) for pre, (pb, pnb) in beams.items()}
            continue
        nxt: dict = {}
        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            for k, p in cands:
                if k == BLANK:
                    b, nb = nxt.get(prefix, (0.0, 0.0))
                    nxt[prefix] = (b + total * p, nb)
                    continue
                ext = prefix + (k,)
                b, nb = nxt.get(ext, (0.0, 0.0))
                if prefix and prefix[-1] == k:
                    nxt[ext] = (b, nb + pb * p)          # a repeat needs a blank in between
                    b2, nb2 = nxt.get(prefix, (0.0, 0.0))
                    nxt[prefix] = (b2, nb2 + pnb * p)    # otherwise it collapses into the same char
                else:
                    nxt[ext] = (b, nb + total * p)
        if len(nxt) > beam:
            nxt = dict(sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam])
        beams = nxt
    out = [("".join(ALPHABET[k - 1] for k in prefix), pb + pnb) for prefix, (pb, pnb) in beams.items()]
    out.sort(key=lambda x: -x[1])
    return out


def _substitutions(text: str, probs: np.ndarray, score: float) -> list[tuple[str, float]]:
    """Per-position runner-ups from the greedy alignment, scored relative to the best read."""
    best = probs.argmax(axis=1)
    alts, i, prev = [], -1, BLANK
    for t, k in enumerate(best):
        if k != BLANK and k != prev:
            i += 1
            row = probs[t].copy()
            p1 = row[k]
            row[[BLANK, k]] = 0.0
            k2 = int(row.argmax())
            if i < len(text) and row[k2] > 0:
                alts.append((text[:i] + ALPHABET[k2 - 1] + text[i + 1:], score * float(row[k2] / max(p1, 1e-9))))
        prev = k
    return alts


class PlateOCR:
    """Reads plate crops. Build once per process; `read` is not thread-safe (one interpreter)."""

    def __init__(self, model_path=None, threads: int = 1, runtime: str | None = None, beam: int = 6):
        path = Path(model_path) if model_path else DEFAULT_MODEL
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"OCR model metadata not found: {meta_path} (it ships next to {path.name})")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("alphabet") != ALPHABET:
            raise ValueError(f"{meta_path}: alphabet {self.meta.get('alphabet')!r} does not match recognizer.formats")
        self.height, self.width = int(self.meta["input_height"]), int(self.meta["input_width"])
        self.states = list(self.meta.get("states", []))
        self.beam = beam
        self.model = load_model(path, threads=threads, runtime=runtime)
        self.runtime = self.model.runtime
        outs = self.model.outputs
        self._chars_idx = next(i for i, d in enumerate(outs) if len(d["shape"]) == 3)
        self._state_idx = next((i for i, d in enumerate(outs) if len(d["shape"]) == 2), None)

    def logits(self, crop) -> tuple[np.ndarray, np.ndarray | None]:
        x = preprocess(crop, self.height, self.width)[None, :, :, None]
        outs = self.model.run(x)
        chars = outs[self._chars_idx][0]
        state = outs[self._state_idx][0] if self._state_idx is not None else None
        return chars, state

    def read(self, crop) -> PlateRead:
        chars, state_logits = self.logits(crop)
        return self.decode(chars, state_logits)

    def read_batch(self, crops) -> list[PlateRead]:
        return [self.read(c) for c in crops]

    def decode(self, chars: np.ndarray, state_logits: np.ndarray | None = None) -> PlateRead:
        probs = _softmax(chars.astype(np.float32))
        greedy, greedy_confs = greedy_decode(probs)
        beams = beam_decode(probs, beam=self.beam)
        text, score = beams[0] if beams else (greedy, 0.0)
        if text == greedy:
            char_conf = tuple(greedy_confs)
        else:
            each = score ** (1.0 / max(len(text), 1))
            char_conf = tuple(each for _ in text)
        seen, alts = {text}, []
        for cand, s in beams[1:] + _substitutions(greedy, probs, score):
            if cand and cand not in seen:
                seen.add(cand)
                alts.append(Alternative(cand, round(float(s), 6)))
        alts.sort(key=lambda a: -a.score)
        region, region_conf = None, None
        if state_logits is not None and self.states:
            sp = _softmax(state_logits.astype(np.float32))
            i = int(sp.argmax())
            if self.states[i] != "other":
                region, region_conf = self.states[i], float(sp[i])
        return PlateRead(
            text=normalise(text),
            confidence=float(score) if text else 0.0,
            char_confidences=tuple(round(c, 6) for c in char_conf),
            alternatives=tuple(alts[: max(MIN_ALTERNATIVES, 5)]),
            region=region,
            region_confidence=region_conf,
        )


def read_crop_file(path, ocr: PlateOCR) -> PlateRead:
    """Decode an image file and read it; a corrupt or truncated file raises CropError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CropError(f"cannot decode image {path}: {exc}") from exc
    return ocr.read(arr)


__all__ = ["PlateOCR", "CropError", "preprocess", "greedy_decode", "beam_decode", "read_crop_file"]
