"""Plate OCR: a conv CRNN (TFLite, builtin ops only) read with CTC decoding in numpy.

The model sees one grayscale plate crop resized to a fixed size (recognizer/models/ocr.json) and
returns per-column character logits (CTC, blank = index 0) plus state logits. Decoding happens
here, in numpy: a pruned CTC prefix beam search and the greedy path's runner-ups propose readings,
letter/digit look-alike swaps (0/O, 1/I, 5/S, 8/B, 2/Z, 6/G, ...) are added where the OCR is
unsure, every candidate is scored exactly under CTC and weighed by the plate-format prior of
recognizer/formats.py. The best is the read; the next ones, with scores, are the alternatives
that fuzzy search and hotlist matching use. TensorFlow is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .formats import ALPHABET, SWAPS, format_prior, normalise
from .result import Alternative, PlateRead
from .runtime import load_model

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "ocr.tflite"
BLANK = 0  # CTC blank; characters are ALPHABET[i - 1]
MIN_ALTERNATIVES = 3
# Decoding with the plate-format prior (recognizer/formats.py):
PRIOR_WEIGHT = 1.0  # exponent on the prior's lift; 1 = plain Bayes
SWAP_MIN_RATIO = 1e-3  # try a look-alike swap when the OCR gives it >= this share of the read char
STATE_CONFIDENT = 0.8  # use the state's own formats only when the state head is this sure
# Views of one crop read together (decode_views): the crop itself, the crop padded with its edge
# pixels, the crop trimmed; (x, y) fractions of its width and height on each side.
PAD_VIEW = (0.04, 0.08)
TRIM_VIEW = (0.03, 0.05)
MAX_VIEWS = 3


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


def crop_views(crop: np.ndarray, n: int) -> list[np.ndarray]:
    """Up to `n` views of a checked crop: itself, padded with its edge pixels (PAD_VIEW), trimmed
    (TRIM_VIEW). A view that would change nothing (a crop of a few pixels), or leave too little to
    read, is left out."""
    h, w = crop.shape[:2]
    out = [crop]
    if n >= 2:
        dx, dy = round(w * PAD_VIEW[0]), round(h * PAD_VIEW[1])
        if dx or dy:
            out.append(np.pad(crop, ((dy, dy), (dx, dx)) + ((0, 0),) * (crop.ndim - 2), mode="edge"))
    if n >= 3:
        dx, dy = round(w * TRIM_VIEW[0]), round(h * TRIM_VIEW[1])
        if (dx or dy) and w - 2 * dx >= 8 and h - 2 * dy >= 4:
            out.append(crop[dy : h - dy, dx : w - dx])
    return out


def preprocess(crop, height: int, width: int) -> np.ndarray:
    """Crop -> float32 (height, width) in [0, 1], contrast-stretched. Training uses this too."""

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
    # prefix -> (p ending in blank, p ending in non-blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}
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
                    nxt[ext] = (b, nb + pb * p)  # a repeat needs a blank in between
                    b2, nb2 = nxt.get(prefix, (0.0, 0.0))
                    nxt[prefix] = (b2, nb2 + pnb * p)  # otherwise it collapses into the same char
                else:
                    nxt[ext] = (b, nb + total * p)
        if len(nxt) > beam:
            nxt = dict(sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam])
        beams = nxt
    out = [("".join(ALPHABET[k - 1] for k in prefix), pb + pnb) for prefix, (pb, pnb) in beams.items()]
    out.sort(key=lambda x: -x[1])
    return out


def _greedy_columns(probs: np.ndarray) -> list[int]:
    """For each character of the greedy read, the column where it is most probable."""
    best = probs.argmax(axis=1)
    cols, prev = [], BLANK
    for t, k in enumerate(best):
        if k != BLANK and k != prev:
            cols.append(t)
        elif k != BLANK and probs[t, k] > probs[cols[-1], k]:
            cols[-1] = t
        prev = k
    return cols


def _substitutions(text: str, probs: np.ndarray, cols: list[int]) -> list[str]:
    """Per-position runner-ups of the greedy read (candidates for ranking, not yet scored)."""
    out = []
    for i, t in enumerate(cols[: len(text)]):
        row = probs[t].copy()
        row[[BLANK, ALPHABET.index(text[i]) + 1]] = 0.0
        k2 = int(row.argmax())
        if row[k2] > 0:
            out.append(text[:i] + ALPHABET[k2 - 1] + text[i + 1 :])
    return out


def _swaps(text: str, probs: np.ndarray, cols: list[int], min_ratio: float, max_positions: int = 4) -> list[str]:
    """Variants of `text` with letter/digit look-alikes swapped (formats.SWAPS) where the OCR gives
    the look-alike at least `min_ratio` of the read character's probability. Single swaps of every
    such pair, plus every combination over the `max_positions` most ambivalent positions."""
    options = []  # (ratio, position, replacement)
    for i, t in enumerate(cols[: len(text)]):
        c = text[i]
        p_c = probs[t, ALPHABET.index(c) + 1]
        for d in SWAPS.get(c, ""):
            r = probs[t, ALPHABET.index(d) + 1] / max(p_c, 1e-9)
            if r >= min_ratio:
                options.append((float(r), i, d))
    if not options:
        return []
    out = [text[:i] + d + text[i + 1 :] for _, i, d in options]
    best_per_pos: dict[int, str] = {}
    for _, i, d in sorted(options, reverse=True):
        if i not in best_per_pos and len(best_per_pos) < max_positions:
            best_per_pos[i] = d
    positions = sorted(best_per_pos)
    for mask in range(1, 1 << len(positions)):
        chars = list(text)
        for j, i in enumerate(positions):
            if mask >> j & 1:
                chars[i] = best_per_pos[i]
        out.append("".join(chars))
    return out


def ctc_scores(probs: np.ndarray, texts: list[str]) -> np.ndarray:
    """Exact CTC probability P(text | columns) of each text (forward algorithm, all texts at once).
    `probs` is (columns, symbols), or (views, columns, symbols) for several views of one plate
    read in one pass; the result is (texts,) or (views, texts)."""
    p = probs.astype(np.float64)
    single = p.ndim == 2
    if single:
        p = p[None]
    n = len(texts)
    L = max((len(t) for t in texts), default=0)
    S = 2 * L + 1
    lab = np.zeros((n, S), np.int64)  # blank, c1, blank, c2, ... (padded with blanks)
    for j, t in enumerate(texts):
        if t:
            lab[j, 1 : 2 * len(t) : 2] = [ALPHABET.index(c) + 1 for c in t]
    skip = np.zeros((n, S), bool)  # s-2 -> s allowed: a character unlike the one before
    skip[:, 2:] = (lab[:, 2:] != BLANK) & (lab[:, 2:] != lab[:, :-2])
    views = p.shape[0]
    alpha = np.zeros((views, n, S))
    alpha[:, :, 0] = p[:, 0, BLANK][:, None]
    if S > 1:
        alpha[:, :, 1] = p[:, 0][:, lab[:, 1]]
    for col in range(1, p.shape[1]):
        nxt = alpha.copy()
        nxt[:, :, 1:] += alpha[:, :, :-1]
        nxt[:, :, 2:] += np.where(skip[:, 2:], alpha[:, :, :-2], 0.0)
        alpha = nxt * p[:, col][:, lab]
    ends = np.array([2 * len(t) for t in texts])
    rows = np.arange(n)
    out = alpha[:, rows, ends] + np.where(ends > 0, alpha[:, rows, np.maximum(ends - 1, 0)], 0.0)
    return out[0] if single else out


def _reweigh_per_length(texts: list[str], ocr_p: np.ndarray, lift: np.ndarray, n_base: int) -> np.ndarray:
    """score = P_ocr(n) * P(text | n). P_ocr(n) is the OCR's mass on the first `n_base` candidates
    (the readings found without the prior) of length n; P(text | n) is proportional to
    P_ocr(text) * lift(text) among all candidates of length n. So the prior moves mass only between
    readings of the same length (it knows layouts, not how many characters a crop shows), and the
    total stays the OCR's (a blurred crop stays unconfident whatever its format)."""
    lengths = np.array([len(t) for t in texts])
    weighed = ocr_p * lift
    scores = ocr_p.copy()
    for n in np.unique(lengths):
        m = lengths == n
        mass = ocr_p[:n_base][m[:n_base]].sum()
        if weighed[m].sum() > 0 and mass > 0:
            scores[m] = weighed[m] / weighed[m].sum() * mass
    return scores


class PlateOCR:
    """Reads plate crops. Build once per process; `read` is not thread-safe (one interpreter)."""

    def __init__(
        self,
        model_path=None,
        threads: int = 1,
        runtime: str | None = None,
        beam: int = 6,
        prior_weight: float = PRIOR_WEIGHT,
        views: int = 1,
    ):
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be 1 to {MAX_VIEWS}, got {views}")
        self.views = views
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
        # prior_weight 0 turns the plate-format prior off (pure OCR ranking).
        self.prior_weight = float(prior_weight)
        self.prior = format_prior() if self.prior_weight > 0 else None
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
        """One crop's read: `views` views of it (the crop, then padded and trimmed; see crop_views)."""
        if self.views == 1:
            return self.decode(*self.logits(crop))
        return self.read_views(crop_views(check_crop(crop), self.views))

    def read_views(self, crops) -> PlateRead:
        """One read from several crops of the same plate (different margins): see decode_views."""
        outs = [self.logits(c) for c in crops]
        return self.decode_views([c for c, _ in outs], [s for _, s in outs if s is not None] or None)

    def read_batch(self, crops) -> list[PlateRead]:
        return [self.read(c) for c in crops]

    def decode(self, chars: np.ndarray, state_logits: np.ndarray | None = None) -> PlateRead:
        """Column logits of one crop -> PlateRead (decode_views with one view)."""
        return self.decode_views([chars], None if state_logits is None else [state_logits])

    def decode_views(self, chars_list: list[np.ndarray], state_list: list[np.ndarray] | None = None) -> PlateRead:
        """Column logits of one or more views of a plate -> PlateRead. Each view proposes readings
        (beam readings, per-position runner-ups and letter/digit look-alike swaps); every candidate
        is scored exactly under CTC in every view and the scores are averaged (an ensemble over
        views: a character one crop cuts or blurs is seen in another), then weighed by the
        plate-format prior within each length (see _reweigh_per_length). The first view is the
        reference for the per-character confidences."""
        views = [_softmax(c.astype(np.float32)) for c in chars_list]
        region, region_conf = None, None
        if state_list and self.states:
            sp = np.mean([_softmax(s.astype(np.float32)) for s in state_list], axis=0)
            i = int(sp.argmax())
            if self.states[i] != "other":
                region, region_conf = self.states[i], float(sp[i])
        # The readings found without the prior first: their mass per length is the OCR's alone.
        found: dict[str, None] = {}
        seeds = []
        for probs in views:
            greedy_v, confs_v = greedy_decode(probs)
            beams = beam_decode(probs, beam=self.beam)
            cols = _greedy_columns(probs)
            found.update(dict.fromkeys([t for t, _ in beams] + [greedy_v] + _substitutions(greedy_v, probs, cols)))
            seeds.append((probs, cols, greedy_v, confs_v, beams[0][0] if beams else greedy_v))
        greedy, greedy_confs = seeds[0][2], seeds[0][3]
        found.pop("", None)
        n_base = len(found)
        if self.prior is not None:
            for probs, cols, greedy_v, _, best_v in seeds:
                for base in dict.fromkeys([greedy_v, best_v]):
                    if len(base) == len(cols):
                        found.update(dict.fromkeys(_swaps(base, probs, cols, SWAP_MIN_RATIO)))
        texts = list(found)
        if not texts:
            return PlateRead(
                text="",
                confidence=0.0,
                char_confidences=(),
                alternatives=(),
                region=region,
                region_confidence=region_conf,
            )
        ocr_p = ctc_scores(views[0], texts) if len(views) == 1 else ctc_scores(np.stack(views), texts).mean(axis=0)
        scores = ocr_p
        if self.prior is not None and ocr_p.sum() > 0:
            state_weight = region_conf if region_conf is not None and region_conf >= STATE_CONFIDENT else 0.0
            lift = np.exp(self.prior_weight * np.array(self.prior.log_weights(texts, region, state_weight)))
            scores = _reweigh_per_length(texts, ocr_p, lift, n_base)
        order = np.argsort(-scores, kind="stable")
        text, score = texts[order[0]], float(scores[order[0]])
        char_conf = self._char_confidences(text, score, texts, scores, greedy, greedy_confs)
        alts = [Alternative(texts[j], round(float(scores[j]), 6)) for j in order[1 : 1 + max(MIN_ALTERNATIVES, 5)]]
        return PlateRead(
            text=normalise(text),
            confidence=min(1.0, score),
            char_confidences=tuple(round(min(1.0, c), 6) for c in char_conf),
            alternatives=tuple(alts),
            region=region,
            region_confidence=region_conf,
        )

    @staticmethod
    def _char_confidences(text, score, texts, scores, greedy, greedy_confs) -> list[float]:
        """The greedy column confidence where `text` agrees with the greedy read. Where a swap or a
        runner-up of the same length won: the share of the same-length candidates' score that has
        this character there. A reading of another length: the geometric mean of its score."""
        if text == greedy:
            return list(greedy_confs)
        if len(text) != len(greedy):
            return [score ** (1.0 / len(text))] * len(text)
        same = [(t, s) for t, s in zip(texts, scores) if len(t) == len(text)]
        total = sum(s for _, s in same) or 1.0
        return [
            greedy_confs[i] if c == greedy[i] else float(sum(s for t, s in same if t[i] == c) / total)
            for i, c in enumerate(text)
        ]


def read_crop_file(path, ocr: PlateOCR) -> PlateRead:
    """Decode an image file and read it; a corrupt or truncated file raises CropError."""

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CropError(f"cannot decode image {path}: {exc}") from exc
    return ocr.read(arr)


__all__ = ["PlateOCR", "CropError", "preprocess", "greedy_decode", "beam_decode", "ctc_scores", "read_crop_file"]
