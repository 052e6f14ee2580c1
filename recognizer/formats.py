"""Plate text normalisation and the plate-format prior the OCR uses to rank its readings.

US plates mostly draw O and 0 (and often I/1, S/5, B/8) with one glyph, so only the layout can
tell them apart: "824B0J" is no state's serial format and "824BOJ" is many states' 999LLL. The
prior is P(class pattern | plate length), class pattern = letters as L and digits as 9, taken
from the serial formats our synthetic generator renders (recognizer/plates.py, walked by
recognizer/training/format_table.py into models/plate_formats.json; no dev labels involved).
It is soft: vanity plates and formats the generator does not know get a flat share, and the
prior never decides how many characters a plate has (it is conditioned on the length).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NOT_PLATE = re.compile(r"[^A-Z0-9]")
FORMATS_FILE = Path(__file__).resolve().parent / "models" / "plate_formats.json"

# Characters the OCR (and people) confuse on US plate faces, each way round.
CONFUSABLE = {
    "0": "OQD",
    "O": "0QD",
    "Q": "O0",
    "D": "0O",
    "1": "IL7T",
    "I": "1LT",
    "L": "1I",
    "2": "Z",
    "Z": "2",
    "5": "S",
    "S": "5",
    "8": "B",
    "B": "8",
    "6": "G",
    "G": "6",
    "7": "T1",
    "T": "71",
    "4": "A",
    "A": "4",
    "U": "V",
    "V": "UY",
    "M": "N",
    "N": "M",
}
# Letter/digit pairs that share a glyph on many plates: the decoder tries swapping these where the
# OCR is unsure and lets the format prior weigh in. Only pairs across classes: a prior on
# letter-vs-digit cannot tell two letters apart.
SWAPS = {
    "0": "OD",
    "O": "0",
    "D": "0",
    "1": "IT",
    "I": "1",
    "T": "1",
    "5": "S",
    "S": "5",
    "8": "B",
    "B": "8",
    "2": "Z",
    "Z": "2",
    "6": "G",
    "G": "6",
    "4": "A",
    "A": "4",
}

# At least this share of plates of any length is treated as "any layout" (flat prior), whatever
# the generator says: real roads carry formats it does not render.
MIN_UNKNOWN_SHARE = 0.05


def normalise(text: str | None) -> str:
    """Uppercase A-Z and 0-9 only: the form plates are stored, compared and searched in."""
    if not text:
        return ""
    return _NOT_PLATE.sub("", str(text).upper())


def pattern(text: str) -> str:
    """Class pattern: "7ABC123" -> "9LLL999"."""
    return "".join("9" if c.isdigit() else "L" for c in normalise(text))


class FormatPrior:
    """P(class pattern | length), pooled over the generator's states or for one state."""

    def __init__(self, table: dict):
        self._pooled = table["pooled"]
        self._states = table["states"]
        self.states = frozenset(self._states)

    @classmethod
    def load(cls, path=None) -> FormatPrior:
        path = Path(path) if path else FORMATS_FILE
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError(
                f"cannot load the plate-format table {path}: {exc}; rebuild it with "
                "`python -m recognizer.training.format_table`"
            ) from exc

    @staticmethod
    def _p(by_length: dict, pat: str) -> float | None:
        entry = by_length.get(str(len(pat)))
        if entry is None:
            return None
        unknown = max(entry["vanity"], MIN_UNKNOWN_SHARE)
        return (1 - unknown) * entry["layouts"].get(pat, 0.0) + unknown * 0.5 ** len(pat)

    def probability(self, text: str, state: str | None = None, state_weight: float = 0.0) -> float | None:
        """P(pattern(text) | len(text)); mixes in one state's table with `state_weight` (0..1).
        None when the generator has no plate of that length (the prior has nothing to say)."""
        pat = pattern(text)
        if not pat:
            return None
        pooled = self._p(self._pooled, pat)
        if pooled is None or not state or state_weight <= 0 or state not in self._states:
            return pooled
        own = self._p(self._states[state], pat)
        return pooled if own is None else (1 - state_weight) * pooled + state_weight * own

    def log_weights(self, texts, state: str | None = None, state_weight: float = 0.0) -> list[float]:
        """log prior per text, each relative to the flat 2**-n; 0.0 where there is no information."""
        out = []
        for t in texts:
            p = self.probability(t, state, state_weight)
            out.append(0.0 if p is None else math.log(max(p, 1e-12)) + len(t) * math.log(2.0))
        return out


@lru_cache(maxsize=1)
def format_prior() -> FormatPrior:
    return FormatPrior.load()
