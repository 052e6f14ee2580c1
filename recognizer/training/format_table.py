"""The plate-format prior the OCR decoder uses, derived from the synthetic generator's formats.

    python -m recognizer.training.format_table [--out recognizer/models/plate_formats.json]

render_plate() (recognizer/plates.py) draws a state, then a kind (vanity, motorcycle,
commercial, legacy, standard), then a serial format, with fixed probabilities. This module walks
that same mixture exactly (no sampling, no rendering, no dev labels) and writes, per state and
pooled over the generator's state mix, for each plate length n:

  vanity   P(vanity | n): the share of length-n plates that are vanity plates. A vanity plate
           says nothing about letter vs digit, so the runtime gives it a flat 2**-n.
  layouts  P(class pattern | n, not vanity), class pattern = the label with each letter as L and
           each digit as 9 ("7ABC123" -> "9LLL999").

recognizer/formats.py reads the file at runtime; tests/recognizer/test_formats.py checks that the
shipped file is what this module computes from plates.py now, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from recognizer import plates

OUT = Path(__file__).resolve().parents[1] / "models" / "plate_formats.json"

# render_plate's choices, as written there (keep in step: the drift test fails otherwise).
_VANITY_LENGTHS = [2, 3, 4, 5, 5, 6, 6, 7, 7, 7]
_COMMERCIAL = ["1L99999", "9L99999", "1L 99999"]
_MOTORCYCLE = ["99L999", "1L99999", "99999L", "L9999", "9LL99", "LL999"]
_GENERIC_SHARE = 0.1  # a listed state still draws from GENERIC_FORMATS one time in ten


def state_weights() -> dict[str, float]:
    """P(state) in render_plate: 45% California, 35% uniform over the listed states, 20% over the rest."""
    w: dict[str, float] = defaultdict(float)
    w["ca"] += 0.45
    for s in plates.STATE_FORMATS:
        w[s] += 0.35 / len(plates.STATE_FORMATS)
    for s in plates.OTHER_STATES:
        w[s] += 0.2 / len(plates.OTHER_STATES)
    return dict(w)


def kind_weights(state: str) -> dict[str, float]:
    """P(kind | state) in render_plate (thresholds on one uniform draw)."""
    if state == "ca":
        return {"vanity": 0.22, "motorcycle": 0.05, "commercial": 0.08, "legacy": 0.10, "standard": 0.55}
    return {"vanity": 0.22, "motorcycle": 0.05, "standard": 0.73}


def class_patterns(fmt: str) -> dict[str, float]:
    """A generator format -> {class pattern: probability}. 'A' (letter or digit) splits 26:10;
    gaps, dashes and graphics are not part of the label."""
    out = {"": 1.0}
    for c in fmt:
        if c in "91":
            opts = {"9": 1.0}
        elif c in "LTC":  # T and C are literal letters (NY taxi plates)
            opts = {"L": 1.0}
        elif c == "A":
            opts = {"L": 26 / 36, "9": 10 / 36}
        else:
            continue
        out = {p + k: q * r for p, q in out.items() for k, r in opts.items()}
    return out


def _formats_mass(formats: list[str], weight: float, into: dict):
    for fmt in formats:
        for pat, q in class_patterns(fmt).items():
            into[pat] += weight * q / len(formats)


def state_distribution(state: str) -> tuple[dict[str, float], dict[int, float]]:
    """(P(layout pattern, not vanity | state), P(vanity, n | state))."""
    kinds = kind_weights(state)
    layouts: dict[str, float] = defaultdict(float)
    standard = kinds["standard"] + kinds.get("legacy", 0.0)  # legacy CA plates use the CA formats
    if state in plates.STATE_FORMATS:
        _formats_mass(plates.STATE_FORMATS[state], standard * (1 - _GENERIC_SHARE), layouts)
        _formats_mass(plates.GENERIC_FORMATS, standard * _GENERIC_SHARE, layouts)
    else:
        _formats_mass(plates.GENERIC_FORMATS, standard, layouts)
    _formats_mass(_COMMERCIAL, kinds.get("commercial", 0.0), layouts)
    _formats_mass(_MOTORCYCLE, kinds["motorcycle"], layouts)
    vanity: dict[int, float] = defaultdict(float)
    for n in _VANITY_LENGTHS:
        vanity[n] += kinds["vanity"] / len(_VANITY_LENGTHS)
    return dict(layouts), dict(vanity)


def _by_length(layouts: dict[str, float], vanity: dict[int, float]) -> dict[str, dict]:
    """Condition on the plate length: the prior must not pick how many characters a plate has."""
    out = {}
    for n in sorted({len(p) for p in layouts} | set(vanity)):
        lay = {p: q for p, q in layouts.items() if len(p) == n}
        total_layout, v = sum(lay.values()), vanity.get(n, 0.0)
        out[str(n)] = {
            "vanity": round(v / (v + total_layout), 6),
            "layouts": {p: round(q / total_layout, 6) for p, q in sorted(lay.items(), key=lambda kv: -kv[1])}
            if total_layout
            else {},
        }
    return out


def build() -> dict:
    weights = state_weights()
    pooled_layouts: dict[str, float] = defaultdict(float)
    pooled_vanity: dict[int, float] = defaultdict(float)
    states = {}
    for s in sorted(weights):
        layouts, vanity = state_distribution(s)
        states[s] = _by_length(layouts, vanity)
        for p, q in layouts.items():
            pooled_layouts[p] += weights[s] * q
        for n, q in vanity.items():
            pooled_vanity[n] += weights[s] * q
    return {
        "about": "Plate-format prior derived from recognizer/plates.py by "
        "`python -m recognizer.training.format_table`; see recognizer/formats.py.",
        "pooled": _by_length(pooled_layouts, pooled_vanity),
        "states": states,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    Path(args.out).write_text(json.dumps(build(), indent=1, sort_keys=False) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
