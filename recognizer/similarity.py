"""How alike two reads or two boxes are: what the pipeline uses to follow a vehicle from frame to
frame, search to rank misreads, and evaluation to score the recognizer."""

from __future__ import annotations


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edits_within_one(a: str, b: str) -> int | None:
    """0 when equal, 1 when one edit apart, else None."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) > 1:
        return None
    if len(a) == len(b):
        return 1 if sum(x != y for x, y in zip(a, b)) == 1 else None
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return 1 if short[i:] == long_[i + 1 :] else None
