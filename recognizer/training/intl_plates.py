"""Synthetic European and Brazilian plates, so the OCR learns long one-line plates and the
Mercosur layout instead of only the US 2:1 shapes.

The shipped OCR is judged on US plates; these exist so it generalises (plates-dev's EU and BR
scenes are the check). They reuse the US renderer's fonts, glyph layout and degradations
(`plates.py`); only the plate itself is drawn here. Layouts are described from the public
regulations' shapes (an EU plate is 520 x 110 mm with a blue band on the left; a Mercosur
plate is 400 x 130 mm with a blue band on top), not copied from any artwork.

Labels are the characters only (spaces, dashes, seals and the country code in the blue band are
not part of the plate number), uppercase A-Z and 0-9 as everywhere else.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from recognizer import plates
from recognizer.plates import _dirt, _draw_text_fit, _fonts, _gradient, _rand_text, _round_corners, _text_layer

EU_SIZE = (520, 110)
BR_SIZE = (400, 130)
EU_BLUE = (20, 55, 150)
BR_BLUE = (25, 70, 160)

# Serial shapes in the format language of plates._rand_text ('*' draws a seal or sticker).
EU_FORMATS = {
    "D": ["LL LL 999", "L LL 9999", "LLL L 99", "LL L 9999", "L L 999", "LL*LL 999", "LLL*L 9999"],
    "F": ["LL-999-LL"],
    "I": ["LL 999LL"],
    "E": ["9999 LLL"],
    "NL": ["LL-999-L", "9-LLL-99", "LL-LL-99", "99-LLL-9"],
    "PL": ["LL 99999", "LLL 9999", "LL 9999L", "LLL 99LL"],
    "B": ["1-LLL-999"],
    "A": ["L 9999 L", "LL 999 LL"],
    "CZ": ["1L9 9999"],
    "P": ["LL-99-LL", "99-LL-99"],
    "S": ["LLL 99L", "LLL 999"],
    "": ["LL 999 LL", "LLL 999", "99 LLL 99", "L 999 LLL"],
}
BR_FORMATS = ["LLL9L99"]  # Mercosur (since 2018)
BR_OLD_FORMATS = ["LLL-9999", "LLL 9999"]  # grey plates still on the road


def render_eu_plate(rng: np.random.Generator):
    """One flat EU-style plate: (RGBA image, label)."""
    fonts = _fonts()
    W, H = EU_SIZE
    country = str(rng.choice(sorted(EU_FORMATS)))
    shown, label = _rand_text(rng, str(rng.choice(EU_FORMATS[country])))
    yellow = country in ("NL",) and rng.random() < 0.5 or rng.random() < 0.08  # rear plates, older ones
    paper = (240, 200, 40) if yellow else (242, 242, 238)
    arr = _gradient((W, H), paper, tuple(int(c * rng.uniform(0.88, 1.0)) for c in paper))
    arr += rng.standard_normal((H, W, 1), dtype=np.float32) * rng.uniform(0.3, 1.5)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")
    d = ImageDraw.Draw(img)
    band = 0
    if rng.random() < 0.9:  # the blue band with the stars and the country code
        band = int(W * rng.uniform(0.07, 0.085))
        d.rectangle([0, 0, band, H], fill=EU_BLUE)
        cx, cy, r = band / 2, H * 0.3, band * 0.3
        for k in range(12):
            a = 2 * np.pi * k / 12
            x, y = cx + r * np.cos(a), cy + r * np.sin(a)
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(250, 210, 40))
        if country:
            _draw_text_fit(img, (cx, H * 0.75), country, fonts["header"][0], H * 0.28, band * 0.85, (245, 245, 245))
    fpath = str(rng.choice(fonts["plate"]))
    th = H * rng.uniform(0.62, 0.74)
    margin = W * 0.03
    layer = _text_layer(rng, shown, fpath, th, W - band - 2 * margin, rng.uniform(0.6, 0.95), int(rng.integers(0, 4)))
    tx = int(band + (W - band - layer.width) / 2 + rng.normal(0, W * 0.005))
    ty = int(H * rng.uniform(0.47, 0.53) - layer.height / 2)
    img.paste(Image.new("RGBA", layer.size, (15, 15, 18, 255)), (tx, ty), layer)
    return _finish(rng, img, d, W, H), label


def render_br_plate(rng: np.random.Generator):
    """One flat Brazilian plate, Mercosur or the older grey one: (RGBA image, label)."""
    fonts = _fonts()
    W, H = BR_SIZE
    fpath = str(rng.choice(fonts["plate"]))
    if rng.random() < 0.65:
        shown, label = _rand_text(rng, BR_FORMATS[0])
        arr = _gradient((W, H), (245, 245, 242), (235, 235, 232))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")
        d = ImageDraw.Draw(img)
        band = int(H * rng.uniform(0.2, 0.26))
        d.rectangle([0, 0, W, band], fill=BR_BLUE)
        _draw_text_fit(img, (W / 2, band / 2), "BRASIL", fonts["header"][0], band * 0.7, W * 0.3, (245, 245, 245))
        d.rectangle([W * 0.88, band * 0.2, W * 0.96, band * 0.8], fill=(40, 150, 60))
        top, bottom, ink = band, H, (15, 15, 18)
    else:
        shown, label = _rand_text(rng, str(rng.choice(BR_OLD_FORMATS)))
        grey = int(rng.integers(160, 205))
        arr = _gradient((W, H), (grey, grey, grey + 4), (grey - 15, grey - 15, grey - 12))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")
        d = ImageDraw.Draw(img)
        city = str(
            rng.choice(
                [
                    "SP - SAO PAULO",
                    "RJ - RIO DE JANEIRO",
                    "MG - BELO HORIZONTE",
                    "PR - CURITIBA",
                    "RS - PORTO ALEGRE",
                    "BA - SALVADOR",
                    "SC - JOINVILLE",
                ]
            )
        )
        _draw_text_fit(img, (W / 2, H * 0.13), city, str(rng.choice(fonts["header"])), H * 0.15, W * 0.7, (30, 30, 30))
        top, bottom, ink = int(H * 0.24), H, (25, 25, 25)
    th = (bottom - top) * rng.uniform(0.7, 0.82)
    layer = _text_layer(rng, shown, fpath, th, W * 0.92, rng.uniform(0.6, 0.95), int(rng.integers(0, 4)))
    tx = int((W - layer.width) / 2 + rng.normal(0, W * 0.006))
    ty = int((top + bottom) / 2 - layer.height / 2)
    img.paste(Image.new("RGBA", layer.size, ink + (255,)), (tx, ty), layer)
    return _finish(rng, img, d, W, H), label


def _finish(rng, img, d, W, H):
    """Frame, bolts, dirt and rounded corners, as on the US plates."""
    if rng.random() < 0.4:
        col = tuple(int(c) for c in rng.choice([(20, 20, 20), (180, 180, 185), (60, 60, 65)]))
        d.rectangle([0, 0, W - 1, H - 1], outline=col, width=int(H * rng.uniform(0.03, 0.07)))
    if rng.random() < 0.5:
        for bx in (W * 0.2, W * 0.8):
            r, g = H * 0.03, int(rng.integers(80, 200))
            d.ellipse([bx - r, H * 0.1 - r, bx + r, H * 0.1 + r], fill=(g, g, g), outline=(40, 40, 40))
    if rng.random() < 0.35:
        img = _dirt(rng, img, 0.4)
    return _round_corners(img, 0.06)


def render_intl_plate(rng: np.random.Generator):
    """An EU (60%) or Brazilian (40%) plate: (RGBA image, label, state None)."""
    img, label = render_eu_plate(rng) if rng.random() < 0.6 else render_br_plate(rng)
    return img, label, None


def contact_sheet(path: str, n: int = 24, seed: int = 0) -> None:
    """Degraded samples side by side, to look at: python -m recognizer.training.intl_plates OUT.png"""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        plate, _label, _ = render_intl_plate(rng)
        crop = plates.degrade_crop(rng, plate, max_w=260).resize((260, 70))
        tiles.append(crop)
    sheet = Image.new("RGB", (260 * 4, 70 * ((n + 3) // 4)), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % 4) * 260, (i // 4) * 70))
    sheet.save(path)


if __name__ == "__main__":
    import sys

    contact_sheet(sys.argv[1] if len(sys.argv) > 1 else "intl_sheet.png")
