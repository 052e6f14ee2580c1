"""CSV files the product writes for people, who open them in a spreadsheet: the access log's export
(from `waypost audit export` and the Audit page) and the evidence ZIP's reads.csv. Every one is
written through DictWriter here, so that no cell can run as a formula.

A spreadsheet takes a cell that starts with = + - or @ (or a tab or carriage return, which some
strip before looking) as a formula: a username typed at the sign-in form as =HYPERLINK(...) is kept
in the access log as typed, and would become a live link, or worse, in the auditor's copy. As
OWASP advises (CSV injection), such a cell is written with a single quote in front, which makes it
text. Only text is changed: a number the product writes (a count, a coordinate, -3) is not a
formula and stays a number. Formats meant for machines keep every value exactly: the JSON lines
export, the signed bundle, reads.json beside reads.csv.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """The value as a CSV cell that a spreadsheet shows as written."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class DictWriter(csv.DictWriter):
    """csv.DictWriter whose rows (and header) go through cell()."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: cell(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for rowdict in rowdicts:
            self.writerow(rowdict)
