"""The shipped OCR model, read through the runtime with real TFLite inference (no mocks)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recognizer import formats
from recognizer.evaluate import LabelError, char_error_rate, evaluate_crops, load_labels
from recognizer.ocr import (
    DEFAULT_MODEL,
    PAD_VIEW,
    TRIM_VIEW,
    CropError,
    PlateOCR,
    _reweigh_per_length,
    beam_decode,
    crop_views,
    ctc_scores,
    greedy_decode,
    read_crop_file,
)
from recognizer.plates import render_plate
from recognizer.runtime import available_runtimes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ocr():
    return PlateOCR(threads=1)


def rendered_plates(n, seed=2024, **kw):
    """Clean, front-on plates made by the training renderer at test time (no committed images)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        plate, text, state = render_plate(rng, **kw)
        rgb = Image.new("RGB", plate.size, (60, 60, 60))
        rgb.paste(plate, (0, 0), plate)
        out.append((np.asarray(rgb), text, state))
    return out


def test_rendered_california_plates_read_back(ocr):
    plates = rendered_plates(8, state="ca", kind="standard")
    reads = [ocr.read(img) for img, _, _ in plates]
    exact = sum(r.text == text for r, (_, text, _) in zip(reads, plates))
    assert exact >= 7, [(r.text, t) for r, (_, t, _) in zip(reads, plates)]
    for r in reads:
        assert len(r.char_confidences) == len(r.text)
        assert 0.0 <= r.confidence <= 1.0
        assert all(0.0 <= c <= 1.0 for c in r.char_confidences)


def test_read_gives_ranked_alternatives(ocr):
    img, text, _ = rendered_plates(1, seed=7, state="ny", kind="standard")[0]
    read = ocr.read(img)
    assert len(read.alternatives) >= 3
    scores = [a.score for a in read.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert read.text not in [a.text for a in read.alternatives]
    assert all(a.text == formats.normalise(a.text) for a in read.alternatives)


def test_gray_and_rgb_input_read_alike(ocr):
    img, text, _ = rendered_plates(1, seed=11, state="ca", kind="standard")[0]
    gray = np.asarray(Image.fromarray(img).convert("L"))
    assert ocr.read(gray).text == ocr.read(img).text


@pytest.mark.parametrize(
    "bad, message",
    [
        ("plate.png", "numpy uint8 array"),
        (np.zeros((40, 120, 3), np.float32), "uint8"),
        (np.zeros((3, 3), np.uint8), "too small"),
        (np.zeros((40, 120, 3, 2), np.uint8), "shape"),
    ],
)
def test_garbage_in_gives_a_clear_error(ocr, bad, message):
    with pytest.raises(CropError, match=message):
        ocr.read(bad)


def test_truncated_image_file_gives_a_clear_error(ocr, tmp_path):
    img, _, _ = rendered_plates(1)[0]
    path = tmp_path / "plate.png"
    Image.fromarray(img).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CropError, match="cannot decode"):
        read_crop_file(path, ocr)


def test_blank_crop_is_not_read_with_confidence(ocr):
    read = ocr.read(np.full((60, 120, 3), 128, np.uint8))
    assert read.confidence < 0.5 or read.text == ""


def test_model_files_are_small_and_consistent():
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert DEFAULT_MODEL.stat().st_size < 2_000_000
    assert meta["alphabet"] == formats.ALPHABET
    assert meta["blank"] == 0


@pytest.mark.skipif(
    "tflite_runtime" not in available_runtimes(), reason="tflite_runtime not installed (Python >= 3.12)"
)
def test_both_runtimes_give_the_same_reads():
    a = PlateOCR(runtime="ai_edge_litert")
    b = PlateOCR(runtime="tflite_runtime")
    assert (a.runtime, b.runtime) == ("ai_edge_litert", "tflite_runtime")
    plates = rendered_plates(6, seed=99)
    for img, _, _ in plates:
        ra, rb = a.read(img), b.read(img)
        assert ra.text == rb.text
        assert ra.region == rb.region
        # int8 kernels differ (XNNPACK vs reference) in rounding only: near-tied runner-ups may swap
        assert len({x.text for x in ra.alternatives[:3]} & {x.text for x in rb.alternatives[:3]}) >= 2
        assert abs(ra.confidence - rb.confidence) < 0.1


def test_importing_the_runtime_does_not_import_tensorflow():
    code = (
        "import sys, recognizer, recognizer.ocr, recognizer.evaluate, recognizer.formats;"
        "from recognizer.ocr import PlateOCR; PlateOCR();"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported';"
        "assert 'keras' not in sys.modules, 'keras imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _probs(path, T=32, n=37):
    """A CTC output that spells `path` (one symbol per column, '-' = blank) with 0.9 confidence."""
    p = np.full((T, n), 0.1 / (n - 1), np.float32)
    for t in range(T):
        ch = path[t] if t < len(path) else "-"
        k = 0 if ch == "-" else formats.ALPHABET.index(ch) + 1
        p[t, k] = 0.9
    return p


def test_ctc_decoders_collapse_repeats_only_across_blanks():
    probs = _probs("--7--AA-A-BB--C1--")
    assert greedy_decode(probs)[0] == "7AABC1"
    text, score = beam_decode(probs)[0]
    assert text == "7AABC1"
    assert 0.0 < score <= 1.0


def _logits(columns, T=32, n=37):
    """CTC logits from columns given as a symbol ('-' = blank, probability 0.9) or a dict
    {symbol: probability} for an unsure column; the rest of each column's mass is spread thin."""
    p = np.full((T, n), 1e-4, np.float32)
    for t in range(T):
        col = columns[t] if t < len(columns) else "-"
        col = {col: 0.9} if isinstance(col, str) else col
        for ch, q in col.items():
            p[t, 0 if ch == "-" else formats.ALPHABET.index(ch) + 1] = q
    return np.log(p / p.sum(axis=1, keepdims=True))


def _spell(text, unsure=None):
    """Columns spelling `text` with blanks between, position i replaced by unsure[i] if given."""
    cols = ["-"]
    for i, ch in enumerate(text):
        cols += [(unsure or {}).get(i, ch), "-"]
    return cols


@pytest.fixture(scope="module")
def ocr_plain():
    return PlateOCR(threads=1, prior_weight=0)


@pytest.mark.parametrize(
    "ocr_lean, ambiguous, expected",
    [
        ("824B0J", {4: {"0": 0.5, "O": 0.4}}, "824BOJ"),  # O among letters: 999LLL
        ("471NZ0", {5: {"0": 0.55, "O": 0.35}}, "471NZO"),
        ("0IT643", {0: {"0": 0.5, "O": 0.4}}, "OIT643"),
        ("IABC234", {0: {"I": 0.5, "1": 0.4}}, "1ABC234"),  # California: a digit leads
        ("7ABC1Z3", {5: {"Z": 0.5, "2": 0.4}}, "7ABC123"),
    ],
)
def test_format_prior_decides_where_the_ocr_is_unsure(ocr, ocr_plain, ocr_lean, ambiguous, expected):
    logits = _logits(_spell(ocr_lean, ambiguous))
    assert ocr_plain.decode(logits).text == ocr_lean  # the OCR alone leans the wrong way
    read = ocr.decode(logits)
    assert read.text == expected
    assert ocr_lean in [a.text for a in read.alternatives]  # the OCR's own reading stays findable
    assert len(read.alternatives) >= 3
    assert [a.score for a in read.alternatives] == sorted((a.score for a in read.alternatives), reverse=True)
    assert 0.0 < read.confidence <= 1.0 and len(read.char_confidences) == len(read.text)


@pytest.mark.parametrize(
    "text, ambiguous",
    [
        ("1ABC234", {0: {"1": 0.5, "I": 0.4}}),  # a California plate is not "IABC234"
        ("5SOB120", {2: {"O": 0.5, "0": 0.4}, 0: {"5": 0.5, "S": 0.4}}),
        ("824B0J", {4: {"0": 0.98, "O": 0.0002}}),  # the OCR is sure: the prior is soft
        ("C0NNMAN", {1: {"0": 0.5, "O": 0.4}}),  # vanity: no layout either way, OCR decides
        ("CONNMAN", {1: {"O": 0.5, "0": 0.4}}),
    ],
)
def test_format_prior_leaves_good_reads_alone(ocr, text, ambiguous):
    assert ocr.decode(_logits(_spell(text, ambiguous))).text == text


def test_a_confident_state_brings_its_own_formats(ocr):
    logits = _logits(_spell("5XN9714", {0: {"5": 0.8, "S": 0.15}}))
    assert ocr.decode(logits).text == "5XN9714"  # pooled: 9LL9999 is a generic layout too
    state = np.full(len(ocr.states), -5.0, np.float32)
    state[ocr.states.index("ny")] = 5.0  # the state head is sure it is New York
    read = ocr.decode(logits, state)
    assert (read.region, read.text) == ("ny", "SXN9714")  # New York serials are LLL9999


def test_rendered_california_plates_read_as_well_with_the_prior(ocr, ocr_plain):
    plates = rendered_plates(16, seed=31, state="ca", kind="standard")
    with_prior = [ocr.read(img).text for img, _, _ in plates]
    plain = [ocr_plain.read(img).text for img, _, _ in plates]
    labels = [t for _, t, _ in plates]
    assert sum(map(str.__eq__, with_prior, labels)) >= sum(map(str.__eq__, plain, labels)) >= 12
    for read, label in zip(with_prior, labels):
        if len(read) == len(label) and label[0].isdigit():
            assert read[0].isdigit(), (label, read)


def test_ctc_scores_sum_every_alignment():
    """Brute force over every path of a 4-column output over blank, A and B."""
    rng = np.random.default_rng(0)
    p = np.zeros((4, 37))
    p[:, [0, 11, 12]] = rng.dirichlet([1, 1, 1], size=4)  # blank, A, B
    expected = {}
    for path in itertools.product([0, 11, 12], repeat=4):
        collapsed = [k for i, k in enumerate(path) if k and (i == 0 or k != path[i - 1])]
        text = "".join(formats.ALPHABET[k - 1] for k in collapsed)
        expected[text] = expected.get(text, 0.0) + np.prod([p[t, k] for t, k in enumerate(path)])
    texts = ["", "A", "AB", "AA", "BAB", "ABAB", "AAB"]
    assert ctc_scores(p, texts) == pytest.approx([expected.get(t, 0.0) for t in texts], abs=1e-12)


def test_the_prior_moves_mass_only_within_a_length():
    texts = ["ABC", "A8C", "ABCD", "A8CD"]
    ocr_p = np.array([0.4, 0.1, 0.3, 0.05])
    scores = _reweigh_per_length(texts, ocr_p, np.array([1.0, 9.0, 1.0, 100.0]), n_base=3)
    assert scores[:2].sum() == pytest.approx(0.5)  # length 3 keeps the OCR's 0.5
    assert scores[2:].sum() == pytest.approx(0.3)  # length 4: the base reading's mass only
    assert scores[1] > scores[0] and scores[3] > scores[2]


def test_normalise_keeps_plate_characters_only():
    assert formats.normalise(" 7abc-123 ") == "7ABC123"
    assert formats.normalise(None) == ""


def test_char_error_rate():
    assert char_error_rate(["ABC123"], ["ABC123"]) == 0.0
    assert char_error_rate(["ABC123", "XY"], ["ABC12", "XZ"]) == pytest.approx(2 / 8)


def test_labels_kind_is_detected_by_header(tmp_path):
    (tmp_path / "labels.csv").write_text("file,x,y,w,h,plate\na.jpg,1,2,30,15,7abc123\n")
    assert load_labels(tmp_path) == (
        "scenes",
        [{"file": "a.jpg", "x": 1, "y": 2, "w": 30, "h": 15, "plate": "7ABC123"}],
    )
    (tmp_path / "labels.csv").write_text("file,state,plate\na.png,ca,7ABC123\n")
    assert load_labels(tmp_path)[0] == "crops"
    (tmp_path / "labels.csv").write_text("name,text\na.png,7ABC123\n")
    with pytest.raises(LabelError, match="neither"):
        load_labels(tmp_path)


def test_evaluate_crops_on_rendered_folder(ocr, tmp_path):
    rows = ["file,state,plate"]
    for i, (img, text, state) in enumerate(rendered_plates(5, seed=5, state="ca", kind="standard")):
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,{state},{text}")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows.append("bad.png,ca,1ABC234")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    res = evaluate_crops(tmp_path, ocr)
    assert res["kind"] == "crops" and res["n"] == 6 and res["errors"] == 1
    rows = res["rows"]
    assert res["exact_match"] == pytest.approx(sum(r["read"] == r["truth"] for r in rows) / 6, abs=1e-4)
    assert res["exact_match"] >= 3 / 6  # the five rendered plates are clean and front-on
    assert [r["error"] != "" for r in rows] == [False] * 5 + [True]
    assert res["ms_median"] is not None and res["ms_median"] < 50


# --- reading several views of one plate together ------------------------------------------------


def test_one_view_reads_exactly_as_the_plain_decoder(ocr):
    for img, _, _ in rendered_plates(4, seed=31):
        chars, state = ocr.logits(img)
        single, views = ocr.decode(chars, state), ocr.decode_views([chars], [state])
        assert (single.text, single.confidence, single.alternatives) == (
            views.text,
            views.confidence,
            views.alternatives,
        )


def test_a_view_that_cuts_a_character_off_is_outvoted(ocr):
    """The tight view loses the last character; read together with two whole views the plate
    comes back whole, while that view alone reads it short."""
    img, text, _ = rendered_plates(1, seed=5, state="ca", kind="standard")[0]
    w = img.shape[1]
    cut = np.ascontiguousarray(img[:, : int(w * 0.80)])
    assert ocr.read(img).text == text
    assert ocr.read(cut).text != text
    fused = ocr.read_views([cut, img, crop_views(img, 2)[1]])  # the cut view first: it is the reference
    assert fused.text == text
    assert len(fused.char_confidences) == len(text) and len(fused.alternatives) >= 3


def test_crop_views_pad_and_trim_and_skip_what_is_too_small():
    crop = np.arange(40 * 100, dtype=np.uint8).reshape(40, 100)
    same, padded, trimmed = crop_views(crop, 3)
    assert same is crop
    assert padded.shape == (40 + 2 * round(40 * PAD_VIEW[1]), 100 + 2 * round(100 * PAD_VIEW[0]))
    assert (padded[0, 0], padded[-1, -1]) == (crop[0, 0], crop[-1, -1])  # edge pixels, not black
    assert trimmed.shape == (40 - 2 * round(40 * TRIM_VIEW[1]), 100 - 2 * round(100 * TRIM_VIEW[0]))
    assert crop_views(np.zeros((20, 60, 3), np.uint8), 2)[1].shape[2] == 3
    assert len(crop_views(np.zeros((4, 9), np.uint8), 3)) == 1  # nothing to pad or trim
    assert len(crop_views(np.zeros((4, 60), np.uint8), 3)) == 3
    assert len(crop_views(np.zeros((4, 9), np.uint8), 1)) == 1


def test_views_are_checked(ocr):
    with pytest.raises(ValueError, match="views must be 1 to 3"):
        PlateOCR(views=0)
    three = PlateOCR(threads=1, views=3)
    plates = rendered_plates(6, seed=77, state="ca", kind="standard")
    assert sum(three.read(img).text == text for img, text, _ in plates) >= 5


def test_ctc_scores_of_several_views_in_one_pass_equal_each_view_alone():
    rng = np.random.default_rng(3)
    views = rng.dirichlet(np.ones(len(formats.ALPHABET) + 1), size=(3, 12))
    texts = ["", "A", "AA", "7ABC", "0O0", "ZZZZZZ"]
    together = ctc_scores(views, texts)
    assert together.shape == (3, len(texts))
    for v in range(3):
        np.testing.assert_allclose(together[v], ctc_scores(views[v], texts), rtol=1e-12)
