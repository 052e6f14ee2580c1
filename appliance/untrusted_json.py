"""JSON that someone else wrote: a sync batch's lines (sync/protocol.py), an audit bundle
(appliance/bundle.py), the files of an evidence ZIP (appliance/export.py).

The json module parses nesting by recursion: a few hundred thousand '[' make it raise
RecursionError, which none of those callers took for a bad file, and a document that parses just
under the interpreter's limit can still exceed it later, in whatever walks it next (json.dumps,
str(), a template) at a deeper point of the stack. Nothing Waypost writes nests more than a handful
of levels, so anything deeper than MAX_DEPTH is refused here, as a ValueError like any other JSON
that is not what the caller expects.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class TooDeep(ValueError):
    pass


def loads(data: bytes | str) -> Any:
    """json.loads, refusing a document nested more than MAX_DEPTH levels (TooDeep, a ValueError)."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise TooDeep(f"JSON nested more than {MAX_DEPTH} levels deep, too deep to parse") from None
    if not within_depth(obj):
        raise TooDeep(f"JSON nested more than {MAX_DEPTH} levels deep")
    return obj


def within_depth(obj: object, depth: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `obj` nest at most `depth` levels. A level at a time, never by
    recursion, so that it cannot fail the way the parser did."""
    level = [obj]
    for _ in range(depth):
        inner: list = []
        for item in level:
            values = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            inner.extend(v for v in values if isinstance(v, (dict, list)))
        if not inner:
            return True
        level = inner
    return False
