"""Synthetic US licence plates for training the OCR and the detector (PIL + numpy only).

Public API (stable; the detector's scene compositor imports it):

    render_plate(rng, state=None, text=None, kind=None) -> (PIL.Image RGBA, text, state)

`rng` is a `numpy.random.Generator`. The image is the flat, front-on plate: 360x180 px for a
car plate (12x6 in at 30 px/in), 245x140 px for a motorcycle plate, with transparent rounded
corners. The whole image is the plate, so its four image corners are the plate corners. `text`
is the label in the plates-dev convention: uppercase A-Z 0-9, and small stacked or vertical
characters are NOT part of it (they are drawn as distractors, the way dev labels leave them
out). `state` is the lower-case two-letter code ("ca", "ny", ...).

    degrade_crop(rng, plate, out_w=None, out_h=None) -> PIL.Image RGB

turns a plate into what a detector hands the OCR at a fixed roadside post: perspective,
rotation, loose or tight crop with car body around it, blur, low light, IR grayscale, glare,
rain, low resolution, JPEG artefacts.

`python -m recognizer.plates` writes a contact sheet to /tmp/plates_sheet.png.
Fonts come from Debian font packages; see ASSETS.md.
"""

from __future__ import annotations

import math
import os
import string

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAR_SIZE = (360, 180)
MOTO_SIZE = (245, 140)
LETTERS = string.ascii_uppercase
DIGITS = string.digits

_FONT_DIRS = ["/usr/share/fonts"]
# Plate glyphs: condensed/bold sans faces; the renderer also squeezes them horizontally.
_PLATE_FONT_NAMES = [
    "NimbusSansNarrow-Bold.otf",
    "LiberationSansNarrow-Bold.ttf",
    "RobotoCondensed-Bold.ttf",
    "RobotoCondensed-Regular.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "NimbusSans-Bold.otf",
    "LiberationSans-Bold.ttf",
    "FreeSansBold.ttf",
    "URWGothic-Demi.otf",
    "DejaVuSansMono-Bold.ttf",
    "LiberationMono-Bold.ttf",
    "NimbusMonoPS-Bold.otf",
    "Roboto-Medium.ttf",
    "Roboto-Bold.ttf",
    "NimbusSansNarrow-Regular.otf",
    # Tall condensed faces nearer the US plate faces (narrow T, flagged 1, O barely unlike 0).
    "OSP-DIN.ttf",
    "BebasNeue-Bold.otf",
    "BebasNeue-Regular.otf",
    "routed-gothic-narrow.ttf",
    "routed-gothic.ttf",
]
# Faces drawn with a hairline: the renderer always thickens them by at least this stroke.
_MIN_STROKE = {"routed-gothic-narrow.ttf": 3, "routed-gothic.ttf": 3}
_HEADER_FONT_NAMES = [
    "NimbusSans-Bold.otf",
    "LiberationSerif-Bold.ttf",
    "NimbusRoman-Bold.otf",
    "C059-Bold.otf",
    "DejaVuSans-Bold.ttf",
    "RobotoCondensed-Bold.ttf",
    "URWBookman-Demi.otf",
    "FreeSerifBold.ttf",
]
_SCRIPT_FONT_NAMES = [
    "Z003-MediumItalic.otf",
    "URWBookman-DemiItalic.otf",
    "C059-BdIta.otf",
    "NimbusRoman-BoldItalic.otf",
    "DejaVuSerif-BoldItalic.ttf",
]


def _find_fonts(names):
    index = {}
    for root in _FONT_DIRS:
        for dirpath, _, files in os.walk(root):
            for f in files:
                index.setdefault(f, os.path.join(dirpath, f))
    return [index[n] for n in names if n in index]


_FONT_CACHE: dict = {}


def _fonts():
    if not _FONT_CACHE:
        plate = _find_fonts(_PLATE_FONT_NAMES)
        if not plate:
            raise RuntimeError(
                "no plate fonts found: apt-get install fonts-dejavu-core fonts-liberation "
                "fonts-urw-base35 fonts-roboto-unhinted fonts-freefont-ttf fonts-opendin "
                "fonts-bebas-neue fonts-routed-gothic (see ASSETS.md)"
            )
        _FONT_CACHE["plate"] = plate
        _FONT_CACHE["header"] = _find_fonts(_HEADER_FONT_NAMES) or plate
        _FONT_CACHE["script"] = _find_fonts(_SCRIPT_FONT_NAMES) or _FONT_CACHE["header"]
    return _FONT_CACHE


def _font(path, size):
    key = (path, size)
    f = _FONT_CACHE.get(key)
    if f is None:
        f = _FONT_CACHE[key] = ImageFont.truetype(path, size)
    return f


# --- plate text formats -------------------------------------------------------------------
# Pattern letters: 9 digit, 1 digit 1-9, L letter, A letter or digit, ' ' gap, '-' dash,
# '*' a graphic separator (state shape, dot). Gaps/dashes/graphics are not part of the label.
STATE_FORMATS = {
    "ca": ["1LLL999", "1LLL999", "1LLL999", "1L99999", "999L999", "LLL999", "1LLL999"],
    "ny": ["LLL-9999", "LLL*9999", "LLL*9999", "LLL 9999", "LL9-9999", "999-LLL", "T999999C", "99999*LL", "99999-LL"],
    "tx": ["LLL-9999", "LL9-L999", "999-LLL", "LLL 9999"],
    "fl": ["LLL L99", "999 LLL", "LLL*L99", "9LL 9LL", "LL9 9LL"],
    "nj": ["L99-LLL", "L99 LLL", "LLL-99L", "LLL*99L", "L99*LLL", "LL-999L"],
    "pa": ["LLL-9999", "LLL 9999", "LLL*9999"],
    "il": ["LL 99999", "L99 9999", "999 9999", "LL9 9999", "999999"],
    "az": ["LLL9999", "999LLL", "LLL 9LL"],
    "nv": ["999*L99", "99L*999", "LLL999"],
    "wa": ["LLL9999", "999-LLL", "LLL 9999"],
    "or": ["999 LLL", "LLL 999", "999*LLL"],
    "ga": ["LLL9999", "LLL 9999", "999 9LL"],
    "oh": ["LLL 9999", "LL 99LL", "LLL 99 9"],
    "mi": ["LLL 9999", "9LLL99", "LLL 999", "999 LLL"],
    "ma": ["1LL 999", "999 LL9", "99L 999", "9LL9 99"],
    "va": ["LLL-9999", "LLL 9999", "999-LLL"],
    "nc": ["LLL-9999", "LLL 9999"],
    "co": ["LLL-L99", "999-LLL", "LLL-999", "LL9-L99"],
    "mn": ["999-LLL", "LLL-999", "999*LLL"],
    "mo": ["LL9 L9L", "LL9*L9L", "999 LLL"],
    "md": ["9LL9999", "9LL 9999", "LLL 999"],
    "wi": ["999-LLL", "LLL-9999", "LLL 9999"],
    "ut": ["L99 9LL", "999 LLL", "L999LL"],
    "id": ["9L 99999", "1L 9999", "9LL 999", "LL 9999"],
    "ri": ["999-999", "LL-999", "9LL 999", "99-999"],
    "wy": ["9-99999", "99-9999", "9*9999", "99*999L"],
    "vt": ["LLL 999", "999 LLL"],
    "nh": ["999 9999", "9999999", "LLL 99"],
    "ar": ["999 LLL", "LLL 999", "999*LLL"],
    "ms": ["LLL 999", "LLL*999", "LLL 9999"],
    "hi": ["LLL 999", "LLL*999"],
    "ia": ["999 LLL", "LLL 999"],
    "al": ["99L999L", "9L 9999L", "99L 999", "9 999L9"],
    "dc": ["LL-9999", "LL 9999"],
}
OTHER_STATES = ["ak", "ct", "de", "ks", "ky", "la", "me", "mt", "ne", "nm", "nd", "ok", "sc", "sd", "tn", "wv", "in"]
GENERIC_FORMATS = [
    "LLL 999",
    "999 LLL",
    "LLL-9999",
    "9LL 999",
    "LL 9999",
    "9LL9999",
    "LLL 9L9",
    "99L L99",
    "LL9 L99",
    "999-999",
    "LLL99L",
]
STATES = sorted(set(STATE_FORMATS) | set(OTHER_STATES))

STATE_NAMES = {
    "ca": "California",
    "ny": "NEW YORK",
    "tx": "TEXAS",
    "fl": "Florida",
    "nj": "New Jersey",
    "pa": "PENNSYLVANIA",
    "il": "Illinois",
    "az": "ARIZONA",
    "nv": "NEVADA",
    "wa": "Washington",
    "or": "Oregon",
    "ga": "GEORGIA",
    "oh": "OHIO",
    "mi": "MICHIGAN",
    "ma": "Massachusetts",
    "va": "VIRGINIA",
    "nc": "NORTH CAROLINA",
    "co": "COLORADO",
    "mn": "Minnesota",
    "mo": "Missouri",
    "md": "Maryland",
    "wi": "WISCONSIN",
    "ut": "UTAH",
    "id": "IDAHO",
    "ri": "Rhode Island",
    "wy": "WYOMING",
    "vt": "VERMONT",
    "nh": "NEW HAMPSHIRE",
    "ar": "Arkansas",
    "ms": "MISSISSIPPI",
    "hi": "HAWAII",
    "ia": "IOWA",
    "al": "Alabama",
    "dc": "DISTRICT OF COLUMBIA",
    "ak": "ALASKA",
    "ct": "Connecticut",
    "de": "DELAWARE",
    "ks": "KANSAS",
    "ky": "Kentucky",
    "la": "LOUISIANA",
    "me": "MAINE",
    "mt": "MONTANA",
    "ne": "NEBRASKA",
    "nm": "NEW MEXICO",
    "nd": "NORTH DAKOTA",
    "ok": "OKLAHOMA",
    "sc": "SOUTH CAROLINA",
    "sd": "SOUTH DAKOTA",
    "tn": "TENNESSEE",
    "wv": "WEST VIRGINIA",
    "in": "INDIANA",
}
SLOGANS = {
    "ca": ["dmv.ca.gov", "DMV.CA.GOV", "", "Sesquicentennial"],
    "ny": ["EXCELSIOR", "THE EMPIRE STATE"],
    "tx": ["THE LONE STAR STATE", "Texas"],
    "fl": ["Sunshine State", "MYFLORIDA.COM"],
    "nj": ["Garden State"],
    "pa": ["visitPA.com", "KEYSTONE STATE"],
    "il": ["Land of Lincoln"],
    "az": ["Grand Canyon State"],
    "nv": ["Home Means Nevada"],
    "or": [""],
    "ga": ["Peach State"],
    "oh": ["Birthplace of Aviation"],
    "mi": ["Pure Michigan", "Great Lake State"],
    "ma": ["The Spirit of America"],
    "nc": ["FIRST IN FLIGHT"],
    "mn": ["10,000 lakes"],
    "mo": ["SHOW-ME STATE"],
    "wi": ["America's Dairyland"],
    "ut": ["LIFE ELEVATED"],
    "id": ["FAMOUS POTATOES"],
    "ri": ["Ocean State"],
    "vt": ["Green Mountain State"],
    "nh": ["LIVE FREE OR DIE"],
    "ar": ["The Natural State"],
    "hi": ["ALOHA STATE"],
    "al": ["Stars Fell On"],
    "dc": ["Taxation Without Representation"],
    "tn": ["Volunteer State"],
}

# Colour schemes: (background top, background bottom, text, header). Text colours are what the
# real plates use: dark blue, black, maroon, green, red.
NAVY, BLACK, MAROON, GREEN, RED, DBLUE = (
    (20, 30, 95),
    (15, 15, 18),
    (110, 20, 30),
    (20, 90, 50),
    (190, 25, 30),
    (25, 60, 150),
)
WHITE = (242, 242, 238)
STATE_SCHEMES = {
    "ca": [(WHITE, WHITE, NAVY, RED)],
    "ny": [
        ((235, 240, 250), (250, 225, 150), NAVY, NAVY),
        ((240, 170, 40), (240, 170, 40), NAVY, NAVY),
        (WHITE, WHITE, NAVY, NAVY),
    ],
    "tx": [(WHITE, (235, 230, 220), BLACK, NAVY), ((250, 240, 220), (215, 225, 240), BLACK, BLACK)],
    "fl": [(WHITE, WHITE, GREEN, (220, 100, 20))],
    "nj": [((245, 225, 150), (230, 200, 110), BLACK, BLACK)],
    "pa": [(WHITE, (250, 230, 150), NAVY, NAVY)],
    "il": [(WHITE, (235, 235, 245), NAVY, RED), (WHITE, WHITE, MAROON, RED)],
    "az": [((240, 230, 210), (200, 130, 80), MAROON, MAROON)],
    "ga": [(WHITE, (240, 220, 200), BLACK, NAVY)],
    "ma": [(WHITE, WHITE, RED, NAVY)],
    "mi": [(WHITE, WHITE, DBLUE, DBLUE)],
    "co": [(WHITE, (210, 235, 215), GREEN, GREEN)],
    "vt": [(GREEN, GREEN, WHITE, WHITE)],
    "nh": [(WHITE, (225, 230, 225), GREEN, GREEN)],
    "ar": [(WHITE, (245, 235, 235), MAROON, NAVY)],
    "wy": [((230, 235, 245), (180, 200, 230), NAVY, NAVY)],
    "hi": [(WHITE, (250, 230, 200), BLACK, RED)],
    "ak": [((250, 215, 60), (250, 215, 60), NAVY, NAVY)],
    "de": [((190, 170, 110), (190, 170, 110), NAVY, NAVY)],
    "md": [(WHITE, WHITE, BLACK, BLACK)],
    "wa": [(WHITE, (220, 230, 245), DBLUE, RED)],
    "or": [(WHITE, (230, 240, 230), NAVY, NAVY)],
    "id": [((245, 245, 245), (200, 60, 60), NAVY, RED)],
    "ut": [(WHITE, (240, 170, 90), NAVY, RED)],
}
GENERIC_SCHEMES = [
    (WHITE, WHITE, NAVY, NAVY),
    (WHITE, WHITE, BLACK, RED),
    (WHITE, (215, 230, 245), DBLUE, DBLUE),
    (WHITE, (230, 240, 225), GREEN, GREEN),
    (WHITE, WHITE, MAROON, MAROON),
    ((250, 240, 200), (250, 225, 150), BLACK, BLACK),
    (WHITE, WHITE, RED, NAVY),
]
# Legacy California layouts (still on the road as year-of-manufacture plates).
CA_LEGACY = [
    ((20, 20, 22), (20, 20, 22), (240, 200, 60), (240, 200, 60)),  # yellow on black, 1963-69
    ((245, 200, 50), (245, 200, 50), (25, 45, 110), (25, 45, 110)),  # blue on yellow, 1970-82
    ((30, 55, 130), (30, 55, 130), (245, 210, 70), (245, 210, 70)),
]  # yellow on blue, 1982-


def _rand_text(rng, pattern):
    out, label = [], []
    for c in pattern:
        if c == "9":
            ch = DIGITS[rng.integers(10)]
        elif c == "1":
            ch = DIGITS[1 + rng.integers(9)]
        elif c == "L":
            ch = LETTERS[rng.integers(26)]
        elif c in "TC":  # literal letters of fixed formats (NY taxi plates: T123456C)
            ch = c
        elif c == "A":
            ch = (LETTERS + DIGITS)[rng.integers(36)]
        else:
            out.append(c)
            continue
        out.append(ch)
        label.append(ch)
    return "".join(out), "".join(label)


def _vanity(rng):
    n = int(rng.choice([2, 3, 4, 5, 5, 6, 6, 7, 7, 7]))
    pool = LETTERS * 3 + DIGITS
    chars = [pool[rng.integers(len(pool))] for _ in range(n)]
    shown = []
    for i, ch in enumerate(chars):
        shown.append(ch)
        if 0 < i < n - 1 and rng.random() < 0.08:
            shown.append(" ")
    return "".join(shown), "".join(chars)


def _normalise(text):
    return "".join(ch for ch in text.upper() if ch.isalnum())


# --- drawing helpers ------------------------------------------------------------------------
def _gradient(size, top, bottom):
    w, h = size
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    a = np.asarray(top, np.float32)[None, None]
    b = np.asarray(bottom, np.float32)[None, None]
    img = a * (1 - t) + b * t
    return np.repeat(img, w, axis=1)


def _scenery(rng, arr, text_rgb):
    """Faint background art (mountains, sun, waves, a state emblem) the OCR must ignore."""
    h, w, _ = arr.shape
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(rng.integers(0, 4)):
        col = tuple(int(c) for c in rng.integers(60, 255, 3)) + (int(rng.integers(30, 110)),)
        kind = rng.integers(4)
        if kind == 0:  # mountain range along the bottom half
            pts = [(0, h)]
            for x in np.linspace(0, w, rng.integers(3, 8)):
                pts.append((float(x), float(h * rng.uniform(0.35, 0.85))))
            pts.append((w, h))
            d.polygon(pts, fill=col)
        elif kind == 1:  # sun / emblem
            r = rng.uniform(0.1, 0.35) * h
            cx, cy = rng.uniform(0, w), rng.uniform(0.2, 0.8) * h
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        elif kind == 2:  # waves / stripes
            y0 = rng.uniform(0.3, 0.95) * h
            for k in range(rng.integers(1, 4)):
                y = y0 + k * 6
                xs = np.linspace(0, w, 20)
                d.line(
                    [(float(x), float(y + 4 * math.sin(x / 17 + k))) for x in xs],
                    fill=col,
                    width=int(rng.integers(2, 6)),
                )
        else:  # a band across the plate
            y = rng.uniform(0, 0.9) * h
            d.rectangle([0, y, w, y + rng.uniform(0.04, 0.15) * h], fill=col)
    return np.asarray(img, np.float32)


def _glyph(font_path, ch, stroke, size=120):
    """One character as an L mask, height `size` (cached: fonts render slowly)."""
    key = ("glyph", font_path, ch, stroke)
    m = _FONT_CACHE.get(key)
    if m is None:
        font = _font(font_path, size)
        box = font.getbbox(ch, stroke_width=stroke)
        m = Image.new("L", (box[2] - box[0] + 4, box[3] - box[1] + 4), 0)
        ImageDraw.Draw(m).text((2 - box[0], 2 - box[1]), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        m = _FONT_CACHE[key] = m.resize((m.width, size), Image.BILINEAR)
    return m


def _emblem(rng, d, cx, cy, rx, ry, fill=255):
    """A filled shape like the state outlines, hearts, keystones and logos plates put between
    character groups or beside them."""
    kind = rng.integers(4)
    if kind == 0:
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    elif kind == 1:  # irregular outline (a state's shape)
        n = int(rng.integers(5, 11))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.55, 1.0, n)
        d.polygon([(cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)) for a, r in zip(ang, rad)], fill=fill)
    elif kind == 2:  # keystone / shield
        d.polygon(
            [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx * 0.7, cy + ry), (cx - rx * 0.7, cy + ry)], fill=fill
        )
    else:  # small stacked sticker-like block
        d.rectangle([cx - rx * 0.8, cy - ry, cx + rx * 0.8, cy + ry], fill=fill)


def _text_layer(rng, shown, font_path, height, max_width, condense, stroke):
    """The plate characters as a grayscale alpha mask of a given height, at most max_width wide."""
    size = 120
    gap = rng.uniform(0.05, 0.25) * size
    widths, masks = [], []
    for ch in shown:
        if ch == " ":
            masks.append(None)
            widths.append(int(size * rng.uniform(0.25, 0.5)))
            continue
        if ch == "-":
            masks.append(ch)
            widths.append(int(size * 0.45))
            continue
        if ch == "*":
            masks.append(ch)
            widths.append(int(size * rng.uniform(0.35, 0.9)))
            continue
        m = _glyph(font_path, ch, stroke)
        m = m.resize((max(1, int(m.width * condense)), size), Image.NEAREST)
        masks.append(m)
        widths.append(m.width)
    total = int(sum(widths) + gap * (len(widths) - 1))
    layer = Image.new("L", (max(total, 1), size), 0)
    x = 0.0
    d = ImageDraw.Draw(layer)
    for m, wdt in zip(masks, widths):
        if isinstance(m, Image.Image):
            layer.paste(m, (int(x), 0))
        elif m == "-":
            d.rectangle([x + wdt * 0.2, size * 0.46, x + wdt * 0.8, size * 0.56], fill=255)
        elif m == "*":  # state-outline / emblem / sticker separator, drawn in the text colour
            _emblem(rng, d, x + wdt / 2, size * rng.uniform(0.4, 0.6), wdt * 0.45, size * rng.uniform(0.2, 0.45))
        x += wdt + gap
    scale = height / size
    w = layer.width * scale
    if w > max_width:
        w = max_width
    return layer.resize((max(1, int(w)), max(1, int(height))), Image.LANCZOS)


def _text_mask(text, font_path, max_h, max_w):
    """A header/footer line as an L mask fitted into max_w x max_h (cached by rounded size)."""
    size = max(6, int(max_h) // 2 * 2)
    key = ("line", text, font_path, size, int(max_w) // 8)
    m = _FONT_CACHE.get(key)
    if m is None:
        font = _font(font_path, size)
        box = font.getbbox(text)
        tw, th = max(1, box[2] - box[0]), max(1, box[3] - box[1])
        m = Image.new("L", (tw + 2, th + 2), 0)
        ImageDraw.Draw(m).text((1 - box[0], 1 - box[1]), text, font=font, fill=255)
        if tw > max_w:
            m = m.resize((max(1, int(max_w)), max(1, int(m.height * max_w / tw))), Image.BILINEAR)
        if len(_FONT_CACHE) > 4000:
            for k in [k for k in _FONT_CACHE if isinstance(k, tuple) and k[0] == "line"]:
                del _FONT_CACHE[k]
        _FONT_CACHE[key] = m
    return m


def _draw_text_fit(img, xy_center, text, font_path, max_h, max_w, fill):
    m = _text_mask(text, font_path, max_h, max_w)
    img.paste(
        Image.new("RGBA", m.size, tuple(fill) + (255,)),
        (int(xy_center[0] - m.width / 2), int(xy_center[1] - m.height / 2)),
        m,
    )


def _sticker(rng, d, x, y, w, h):
    col = tuple(
        int(c)
        for c in rng.choice(
            [
                (230, 40, 40),
                (250, 200, 30),
                (40, 150, 60),
                (40, 90, 200),
                (240, 120, 20),
                (230, 230, 230),
                (200, 60, 160),
            ]
        )
    )
    d.rectangle([x, y, x + w, y + h], fill=col, outline=(40, 40, 40))
    f = _font(_fonts()["header"][0], max(6, int(h * 0.7) // 2 * 2))
    label = str(rng.integers(1, 13)) if rng.random() < 0.5 else f"{rng.integers(0, 100):02d}"
    d.text((x + 2, y + 1), label, font=f, fill=(0, 0, 0))


def render_plate(rng: np.random.Generator, state: str | None = None, text: str | None = None, kind: str | None = None):
    """Render one flat plate. Returns (RGBA image, label text, state code).

    kind: None (random), "standard", "legacy" (CA yellow-on-black etc.), "commercial",
    "vanity", "motorcycle". `text` forces the characters shown (label = normalised text).
    """
    fonts = _fonts()
    if state is None:
        r = rng.random()
        if r < 0.45:
            state = "ca"
        elif r < 0.8:
            state = str(rng.choice(sorted(STATE_FORMATS)))
        else:
            state = str(rng.choice(OTHER_STATES))
    if kind is None:
        r = rng.random()
        kind = (
            "vanity"
            if r < 0.22
            else "motorcycle"
            if r < 0.27
            else "commercial"
            if (state == "ca" and r < 0.35)
            else "legacy"
            if (state == "ca" and r < 0.45)
            else "standard"
        )

    if text is not None:
        shown, label = text, _normalise(text)
    elif kind == "vanity":
        shown, label = _vanity(rng)
    elif kind == "commercial":
        shown, label = _rand_text(rng, str(rng.choice(["1L99999", "9L99999", "1L 99999"])))
    elif kind == "motorcycle":
        shown, label = _rand_text(rng, str(rng.choice(["99L999", "1L99999", "99999L", "L9999", "9LL99", "LL999"])))
    else:
        fmts = STATE_FORMATS.get(state, GENERIC_FORMATS)
        if state not in STATE_FORMATS or rng.random() < 0.1:
            fmts = GENERIC_FORMATS
        shown, label = _rand_text(rng, str(rng.choice(fmts)))

    if text is None and " " in shown and rng.random() < 0.15:
        shown = shown.replace(" ", "*", 1)
    W, H = MOTO_SIZE if kind == "motorcycle" else CAR_SIZE
    if kind == "legacy":
        scheme = CA_LEGACY[rng.integers(len(CA_LEGACY))]
    else:
        schemes = STATE_SCHEMES.get(state, GENERIC_SCHEMES)
        scheme = (
            schemes[rng.integers(len(schemes))]
            if rng.random() < 0.85
            else GENERIC_SCHEMES[rng.integers(len(GENERIC_SCHEMES))]
        )
    top, bottom, text_rgb, head_rgb = scheme

    arr = _gradient((W, H), top, bottom)
    if kind != "legacy" and rng.random() < 0.6:
        arr = _scenery(rng, arr, text_rgb)
    arr += rng.standard_normal((H, W, 1), dtype=np.float32) * rng.uniform(0.3, 1.5)  # paint grain
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGBA")
    d = ImageDraw.Draw(img)

    # Header: state name (script for California and a few others), sometimes absent.
    if rng.random() < 0.92:
        name = STATE_NAMES.get(state, state.upper())
        script = state in ("ca", "il", "ma", "ri", "md") or rng.random() < 0.15
        fpath = (
            fonts["script"][0]
            if (script and state == "ca")
            else str(rng.choice(fonts["script"] if script else fonts["header"]))
        )
        hy = H * rng.uniform(0.10, 0.16)
        _draw_text_fit(
            img, (W * rng.uniform(0.45, 0.55), hy), name, fpath, H * rng.uniform(0.13, 0.2), W * 0.6, head_rgb
        )
    # Footer slogan / website (a frame may cover it).
    if rng.random() < 0.8:
        slogan = str(rng.choice(SLOGANS.get(state, ["", "dmv.gov", "COUNTY"])))
        if kind == "commercial":
            slogan = "COMMERCIAL"
        if slogan:
            _draw_text_fit(
                img,
                (W / 2, H * 0.89),
                slogan,
                str(rng.choice(fonts["header"])),
                H * rng.uniform(0.07, 0.11),
                W * 0.55,
                head_rgb,
            )

    # Main characters.
    fpath = str(rng.choice(fonts["plate"]))
    condense = rng.uniform(0.55, 0.95)
    stroke = max(int(rng.integers(0, 5)), _MIN_STROKE.get(os.path.basename(fpath), 0))
    th = H * (rng.uniform(0.36, 0.56) if kind != "motorcycle" else rng.uniform(0.4, 0.5))
    stacked = rng.random() < 0.15 and kind not in ("motorcycle",)
    margin = W * (0.16 if stacked else 0.06)
    layer = _text_layer(rng, shown, fpath, th, W - 2 * margin, condense, stroke)
    tx = int((W - layer.width) / 2 + rng.normal(0, W * 0.01))
    ty = int(H * rng.uniform(0.5, 0.56) - layer.height / 2)
    if rng.random() < 0.5:  # embossing: a darker offset shadow under the paint
        shadow = Image.new("RGBA", layer.size, (0, 0, 0, 90))
        img.paste(shadow, (tx + 2, ty + 2), layer)
    img.paste(Image.new("RGBA", layer.size, text_rgb + (255,)), (tx, ty), layer)

    if rng.random() < 0.1:  # a bold emblem beside the characters, in the text colour
        ex = tx - W * rng.uniform(0.02, 0.08) if rng.random() < 0.5 else tx + layer.width + W * rng.uniform(0.02, 0.08)
        _emblem(
            rng,
            d,
            ex,
            ty + layer.height / 2,
            W * rng.uniform(0.03, 0.07),
            layer.height * rng.uniform(0.3, 0.5),
            fill=tuple(int(c) for c in text_rgb),
        )
    # Small stacked/vertical characters (not in the label, as in the dev labels).
    if stacked:
        small = "".join(LETTERS[rng.integers(26)] for _ in range(rng.integers(2, 5)))
        sx = tx - W * 0.08 if rng.random() < 0.5 else tx + layer.width + W * 0.02
        f = _font(str(rng.choice(fonts["header"])), max(6, int(th / max(2, len(small)) * 0.95) // 2 * 2))
        for i, ch in enumerate(small):
            d.text((sx, ty + i * th / len(small)), ch, font=f, fill=text_rgb)

    # Registration stickers in the corners.
    for cx in (W * 0.04, W * 0.82):
        if rng.random() < 0.45:
            sw, sh = W * rng.uniform(0.1, 0.14), H * rng.uniform(0.1, 0.16)
            cy = H * 0.04 if rng.random() < 0.5 else H * 0.8
            _sticker(rng, d, cx, cy, sw, sh)
    # Bolts.
    if rng.random() < 0.8:
        for bx in (W * 0.22, W * 0.78):
            for by in (H * 0.12,) if rng.random() < 0.7 else (H * 0.12, H * 0.88):
                r = H * 0.035
                g = int(rng.integers(80, 200))
                d.ellipse([bx - r, by - r, bx + r, by + r], fill=(g, g, g), outline=(40, 40, 40))
    # Licence plate frame: a dark or chrome border, often with dealer text covering the footer.
    if rng.random() < 0.45:
        col = tuple(int(c) for c in (rng.choice([(20, 20, 20), (180, 180, 185), (120, 120, 125), (230, 230, 230)])))
        t = int(H * rng.uniform(0.03, 0.07))
        d.rectangle([0, 0, W - 1, H - 1], outline=col, width=t)
        if rng.random() < 0.6:
            bh = H * rng.uniform(0.1, 0.17)
            d.rectangle([0, H - bh, W, H], fill=col)
            dealer = str(
                rng.choice(
                    [
                        "TOYOTA OF SAN JOSE",
                        "HONDA",
                        "AUTO NATION",
                        "CARMAX",
                        "GO BEARS",
                        "FORD",
                        "SUNSET AUTO",
                        "I'D RATHER BE FISHING",
                    ]
                )
            )
            _draw_text_fit(
                img,
                (W / 2, H - bh / 2),
                dealer,
                str(rng.choice(fonts["header"])),
                bh * 0.7,
                W * 0.7,
                (230, 230, 230) if sum(col) < 300 else (20, 20, 20),
            )
        if rng.random() < 0.4:
            d.rectangle([0, 0, W, H * rng.uniform(0.08, 0.14)], fill=col)
    if rng.random() < 0.4:
        img = _dirt(rng, img, 0.45)
    return _round_corners(img, 0.07), label, state


def _dirt(rng, img: Image.Image, max_strength: float) -> Image.Image:
    """Dirt and wear: blotchy brown over the paint, up to max_strength where it is thickest."""
    W, H = img.size
    a = np.asarray(img).astype(np.float32)
    noise = Image.fromarray((rng.random((H // 8, W // 8)) * 255).astype(np.uint8)).resize((W, H), Image.BICUBIC)  # type: ignore[attr-defined]  # Pillow's stubs declare only Image.Resampling.BICUBIC
    n = np.asarray(noise, np.float32)[..., None] / 255.0
    strength = rng.uniform(0.1, max_strength)
    dirt = np.array([90, 75, 55], np.float32)
    a[..., :3] = a[..., :3] * (1 - strength * n) + dirt * strength * n
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGBA")


def _round_corners(img: Image.Image, radius: float) -> Image.Image:
    """The plate's rounded corners as alpha; radius as a share of its height."""
    W, H = img.size
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, W - 1, H - 1], radius=int(H * radius), fill=255)
    img.putalpha(mask)
    return img


# --- degradations a fixed post sees ---------------------------------------------------------
def _car_background(rng, w, h):
    base = rng.integers(0, 256, 3).astype(np.float32)
    if rng.random() < 0.5:
        base[:] = base.mean()  # grey/black/white cars are the majority
    arr = np.ones((h, w, 3), np.float32) * base
    arr += rng.standard_normal((h, w, 1), dtype=np.float32) * 6
    # bumper / grille edges
    for _ in range(rng.integers(0, 4)):
        y = int(rng.uniform(0, h))
        arr[y : y + int(rng.integers(2, max(3, h // 10)))] *= rng.uniform(0.3, 1.5)
    return np.clip(arr, 0, 255)


def degrade_crop(
    rng: np.random.Generator, plate: Image.Image, out_w: int | None = None, out_h: int | None = None, max_w: float = 330
) -> Image.Image:
    """A plate as a detector would crop it from a roadside frame (RGB, before resizing to the model)."""

    rgba = np.asarray(plate.convert("RGBA"))
    ph, pw = rgba.shape[:2]
    # Where the plate lands inside the crop: margins from slightly cut to loose.
    mx0, mx1 = rng.uniform(-0.03, 0.18, 2) * pw
    my0, my1 = rng.uniform(-0.04, 0.3, 2) * ph
    if rng.random() < 0.3:  # tight crops, as a good detector gives
        mx0, mx1 = rng.uniform(-0.02, 0.04, 2) * pw
        my0, my1 = rng.uniform(-0.03, 0.06, 2) * ph
    if rng.random() < 0.12:  # a box that cuts into the first or last character; the label keeps it
        cut = -rng.uniform(0.04, 0.09) * pw
        mx0, mx1 = (cut, mx1) if rng.random() < 0.5 else (mx0, cut)
    cw, ch = int(pw + mx0 + mx1), int(ph + my0 + my1)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    # Perspective: each corner moves a little, plus an overall rotation and shear.
    jitter = rng.normal(0, 0.035, (4, 2)) * np.array([pw, ph], np.float32)
    ang = math.radians(rng.normal(0, 4))
    shear = rng.normal(0, 0.08)
    dst = src.copy()
    dst[:, 0] += dst[:, 1] * shear - (ph * shear) / 2
    c, s = math.cos(ang), math.sin(ang)
    ctr = np.array([pw / 2, ph / 2], np.float32)
    dst = (dst - ctr) @ np.array([[c, s], [-s, c]], np.float32) + ctr
    dst += jitter + np.array([mx0, my0], np.float32)
    # Final resolution (plates from 60 px wide upwards). Warp straight to twice that size and
    # area-downsample at the end, so small plates alias the way a real sensor makes them.
    target_w = float(
        np.clip(rng.choice([rng.uniform(60, 130), rng.uniform(100, max(101, max_w))], p=[0.35, 0.65]), 40, 400)
    )
    work = min(1.0, 1.6 * target_w / cw)
    dst = dst * work
    cw, ch = max(8, int(cw * work)), max(8, int(ch * work))
    M = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(
        rgba,
        M,
        (cw, ch),
        flags=cv2.INTER_AREA if work < 0.7 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    bg = _car_background(rng, cw, ch)
    a = warped[..., 3:4].astype(np.float32) * (1.0 / 255.0)
    img = warped[..., :3].astype(np.float32) * a + bg * (1 - a)
    return _photometric(rng, img, target_w, out_w, out_h)


def _photometric(rng, img, target_w, out_w=None, out_h=None):
    """Light, weather, sensor and compression effects on a float32 RGB crop; returns PIL RGB."""

    ch, cw = img.shape[:2]
    # Lighting: gradient shading, low light, glare.
    if rng.random() < 0.5:
        gx = np.linspace(rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), cw, dtype=np.float32)[None, :, None]
        img *= gx
    if rng.random() < 0.2:
        img = img * rng.uniform(0.15, 0.5) + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2, 10)
    if rng.random() < 0.12:  # headlight glare blob
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        cx, cy, r = rng.uniform(0, cw), rng.uniform(0, ch), rng.uniform(0.1, 0.5) * cw
        img += (np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(80, 250))[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:  # IR night camera: grayscale, retro-reflective plate, dark surround
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        g = np.clip((g - g.mean()) * rng.uniform(1.0, 1.8) + rng.uniform(90, 160), 0, 255)
        img = np.repeat(g[..., None], 3, axis=2).astype(np.uint8)
    if rng.random() < 0.1:  # rain streaks
        streaks = np.zeros((ch, cw), np.uint8)
        for _ in range(rng.integers(10, 60)):
            x, y = int(rng.uniform(0, cw)), int(rng.uniform(0, ch))
            L = int(rng.uniform(5, 20))
            cv2.line(streaks, (x, y), (x + int(L * 0.2), y + L), 255, 1)
        img = np.clip(img.astype(np.float32) + streaks[..., None] * rng.uniform(0.15, 0.4), 0, 255).astype(np.uint8)

    scale = min(1.0, target_w / cw)
    img = cv2.resize(img, (max(8, int(cw * scale)), max(8, int(ch * scale))), interpolation=cv2.INTER_AREA)
    r = rng.random()
    if r < 0.15:  # motion blur (horizontal-ish), scaled to the plate's size in pixels
        k = int(np.clip(rng.integers(3, 8) * img.shape[1] / 200, 3, 7))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.normal(0, 15), 1.0)
        kern = cv2.warpAffine(kern, rot, (k, k))
        img = cv2.filter2D(img, -1, kern / max(kern.sum(), 1e-6))
    elif r < 0.35:  # defocus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2) * max(0.6, img.shape[1] / 160))
    if rng.random() < 0.5:
        img = np.clip(
            img.astype(np.float32) + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1, 8), 0, 255
        ).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(15, 90))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    out = Image.fromarray(np.ascontiguousarray(img))
    if out_w and out_h:
        out = out.resize((out_w, out_h), Image.BILINEAR)
    return out


def contact_sheet(path="/tmp/plates_sheet.png", n=40, seed=0, degraded=True):
    rng = np.random.default_rng(seed)
    cols, cw, chh = 5, 240, 150
    sheet = Image.new("RGB", (cols * cw, ((n + cols - 1) // cols) * chh), (90, 90, 90))
    d = ImageDraw.Draw(sheet)
    for i in range(n):
        plate, text, state = render_plate(rng)
        im = degrade_crop(rng, plate) if (degraded and i % 2) else plate.convert("RGB")
        im.thumbnail((cw - 8, chh - 24))
        x, y = (i % cols) * cw + 4, (i // cols) * chh + 4
        sheet.paste(im, (x, y))
        d.text((x, y + chh - 20), f"{state} {text}", fill=(255, 255, 0))
    sheet.save(path)
    return path


if __name__ == "__main__":
    print(contact_sheet())
