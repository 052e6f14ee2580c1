"""What the recognizer returns. Plain data: the appliance stores it, the web shows it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Alternative:
    text: str
    score: float


@dataclass(frozen=True)
class PlateRead:
    text: str  # normalised: uppercase A-Z 0-9, no spaces or dashes
    confidence: float  # 0..1, for the whole plate
    char_confidences: tuple[float, ...]  # one per character of `text`
    alternatives: tuple[Alternative, ...]  # best first, `text` excluded, at least 3 where possible
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in frame pixels (None for read_crop)
    corners: tuple[tuple[float, float], ...] | None = None  # 4 points clockwise from top-left, if known
    detection_score: float | None = None
    region: str | None = None  # e.g. "ca"; None when the model cannot tell
    region_confidence: float | None = None
    extra: dict = field(default_factory=dict, compare=False)
