"""Data-sharing requests: another agency's written request for ALPR data, its review, and its export.

Civil Code 1798.90.55(b) lets an ALPR operator share ALPR information only with public agencies,
and the California Attorney General's bulletin 2023-DLE-06 reads that as California state and local
public agencies only: never an out-of-state or federal agency, nor a private entity or person
(including through a vendor's sharing network). So the recipient is checked here, in the domain,
when a request is recorded AND again when it is approved: a form or a command that forgets the
rule still cannot get data out.

The agency type and state are what the person entering a request says, so they are not trusted
alone: the recipient is named by its ORI too (the NCIC originating agency identifier; a California
agency's begins with CA), and its name and ORI are checked against the list of refused recipients
shipped beside this module (recipients_refused.toml: federal departments and their components,
federally led task forces, national networks, other states, tribes, vendors, private bodies). A
refusal names the entry that matched, so a wrong one can be seen and the list corrected. The
recipient's written assurance that the data goes no further than California public agencies
(bulletin 2023-DLE-06) is part of the request and printed in the export's statement.

The policies (e.g. Cypress 464.7) ask for a written request naming the agency, the person
requesting and the intended purpose; the ALPR administrator (or designee) reviews it and approves
it before it is fulfilled; the approved request is retained on file. Requests live in their own
tables (migration 0006) which retention never purges: they are the record of every disclosure.
Two people: whoever records a request cannot approve or deny it. The reviewer sees, before
deciding, how many reads and images the export would hold (coverage(), the export's own query).
A request recorded before the ORI and the assurance were asked for (migration 0011) stays on file
and can be viewed and denied, but not approved nor exported: it is recorded again with both.

Every step is an access record with the request's stated purpose code and case number:
sharing.request (recorded), sharing.approve, sharing.deny, sharing.export; a recipient refused at
entry leaves sharing.refuse, so an auditor sees the attempts as well as the disclosures. Looking at
the requests on file (which show the plates asked for, the periods, the agencies and the export
counts) is recorded too: sharing.list and sharing.view, in the transaction of the lookup.

A request covers the reads whose stored plate (read.plate) matches it, never a read that merely
has the plate among its alternative OCR readings: those are other vehicles' reads (an officer's
search shows them as possible misreads; a disclosure releases only what the approved written
request names, Civil Code 1798.90.55).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import tomllib
import unicodedata
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, IntegerField, TextField

from appliance import audit, search
from appliance import export as exporting
from appliance.config import Settings
from appliance.db import write
from appliance.models import BaseModel, Evidence, Read, utcnow

STATUTE = "Civil Code § 1798.90.55(b)"
BULLETIN = "California Attorney General Information Bulletin 2023-DLE-06"

# The kinds of recipient a request may name. The refused kinds are listed too, so that a person
# entering a request from, say, a federal task force sees the refusal and its reason rather than
# squeezing the agency into "other".
AGENCY_TYPES: dict[str, str] = {
    "ca-city-police": "California city police department",
    "ca-county-sheriff": "California county sheriff's office",
    "ca-state-agency": "California state agency (CHP, DOJ, ...)",
    "ca-district-attorney": "California district attorney",
    "ca-court": "California court",
    "ca-other-public": "Other California state or local public agency",
    "out-of-state": "Agency of another state (refused)",
    "federal": "Federal agency or federally led task force: FBI, DHS, ICE, CBP, DEA, ATF, HIDTA, ... (refused)",
    "tribal": "Tribal government or tribal police, Bureau of Indian Affairs (refused)",
    "private": "Private entity or person, including vendor networks (refused)",
}
ALLOWED_TYPES = frozenset(t for t in AGENCY_TYPES if t.startswith("ca-"))
REFUSED_TYPES = frozenset(AGENCY_TYPES) - ALLOWED_TYPES

_WHY = {
    "out-of-state": "an agency of another state is not a California public agency",
    "federal": "a federal agency is not a California state or local public agency",
    "tribal": "a tribal government or its police is not a California state or local public agency",
    "private": "a private entity or person is not a public agency (this includes sharing through a vendor's network)",
}

MATCH_MODES = ("exact", "wildcard")
STATUSES = ("pending", "approved", "denied")
MAX_PERIOD_DAYS = 366 * 5
MIN_ASSURANCE = 20  # characters: a quoted sentence, not "yes" or "on file"
_STATE = re.compile(r"^[A-Z]{2}$")
_ORI = re.compile(r"^[A-Z]{2}[A-Z0-9]{7}$")
_ORI_EXAMPLE = "CA0190000"
REFUSED_LIST = "recipients_refused.toml"  # beside this module; package data, installed with it

for _name in ("sharing.request", "sharing.approve", "sharing.deny", "sharing.export"):
    audit.register_action(_name, True)
audit.register_action("sharing.refuse", False)
# The file of requests shows the plates and periods asked for: looking at it is an access with a
# stated purpose of its own (usually SHARING), as for a search.
audit.register_action("sharing.list", True)
audit.register_action("sharing.view", True)


class SharingError(ValueError):
    """The request cannot be recorded or acted on as given; `field` names the input at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RecipientRefused(SharingError):
    """The recipient is not a California state or local public agency."""


class NotApproved(SharingError):
    """Only an approved request can produce an export."""


class SharingRequest(BaseModel):
    id = AutoField()
    agency_name = CharField()
    agency_type = CharField()
    agency_state = CharField()
    agency_ori = CharField(default="")  # NCIC originating agency identifier, 9 characters
    requester_name = CharField()
    requester_title = CharField()
    requester_contact = CharField()
    intended_purpose = TextField()  # in the requesting agency's words
    legal_authority = CharField()  # their case number, warrant, statute...
    purpose_code = CharField()  # this department's code, recorded with every step
    case_number = CharField()
    plate = CharField()
    match_mode = CharField()
    period_start_at = DateTimeField()
    period_end_at = DateTimeField()
    status = CharField(default="pending")
    created_by = CharField()
    created_organization = CharField()
    created_at = DateTimeField(default=utcnow)
    decided_by = CharField(null=True)
    decided_at = DateTimeField(null=True)
    decision_note = TextField(null=True)
    assurance = TextField(default="")  # the recipient's written assurance: no onward sharing

    class Meta:
        table_name = "sharing_request"

    @property
    def purpose(self) -> audit.Purpose:
        return audit.Purpose(self.purpose_code, self.case_number)

    @property
    def agency_type_label(self) -> str:
        return AGENCY_TYPES.get(self.agency_type, self.agency_type)

    def query(self) -> search.Query:
        """The reads this request covers: the stored plate only (alternatives=False), whatever the mode."""
        return search.Query(
            text=self.plate,
            mode=self.match_mode,
            since=self.period_start_at,
            until=self.period_end_at,
            alternatives=False,
        )

    def as_record(self) -> dict:
        """The data elements the request asks for, as its access records store them."""
        return {"sharing_request": self.id, **self.query().as_record()}


class SharingExport(BaseModel):
    """One evidence ZIP made for a request: who, when, how many reads, and the access record."""

    id = AutoField()
    request = ForeignKeyField(SharingRequest, backref="exports", on_delete="RESTRICT")
    exported_by = CharField()
    exported_at = DateTimeField(default=utcnow)
    read_count = IntegerField()
    image_count = IntegerField()
    data_sha256 = CharField()
    record_seq = IntegerField()

    class Meta:
        table_name = "sharing_export"


@dataclasses.dataclass
class NewRequest:
    agency_name: str
    agency_type: str
    agency_state: str
    requester_name: str
    requester_title: str
    requester_contact: str
    intended_purpose: str
    legal_authority: str
    plate: str
    match_mode: str
    period_start_at: dt.datetime
    period_end_at: dt.datetime
    agency_ori: str = ""  # required: an empty one is refused with the field named, as a bad one is
    assurance: str = ""  # required likewise


# -- the list of refused recipients -----------------------------------------------------------------

# How a name is read before it is matched (recipients_refused.toml says the same to its editors).
_INITIALS = re.compile(r"\b[a-z](?:\.[a-z])+\b\.?")  # U.S. F.B.I. I.C.E (dotted initials)
_JOINED = (
    (("united", "states", "of", "america"), "us"),
    (("united", "states"), "us"),
    (("u", "s", "a"), "us"),
    (("u", "s"), "us"),
)
_ABBREVIATIONS = {
    "usa": "us",
    "dept": "department",
    "natl": "national",
    "govt": "government",
    "fed": "federal",
    "admin": "administration",
}
_DROPPED = frozenset({"the"})


def words(text: str) -> tuple[str, ...]:
    """A name as the list matches it: no accents, lower case, no apostrophes, "&" as "and", dotted
    initials joined (U.S. -> us), other punctuation between words, "the" dropped, the United States
    as "us" and a few abbreviations (Dept., Nat'l, Govt, Fed, Admin) spelled out."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['\u2019`]", "", text).replace("&", " and ")
    text = _INITIALS.sub(lambda m: m.group(0).replace(".", "") + " ", text)
    raw = re.findall(r"[a-z0-9]+", text)
    out: list[str] = []
    i = 0
    while i < len(raw):
        for joined, word in _JOINED:
            if tuple(raw[i : i + len(joined)]) == joined:
                out.append(word)
                i += len(joined)
                break
        else:
            word = _ABBREVIATIONS.get(raw[i], raw[i])
            if word not in _DROPPED:
                out.append(word)
            i += 1
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Listed:
    """One entry of the list of refused recipients: the body, its family, the words that name it."""

    family: str
    name: str
    terms: tuple[tuple[str, ...], ...]
    ori_codes: frozenset[str]


@dataclasses.dataclass(frozen=True)
class RefusedList:
    families: dict[str, str]  # family -> why it is refused
    places: tuple[tuple[str, ...], ...]  # California places whose name holds a listed word
    entries: tuple[Listed, ...]


def _parse_list(data: dict) -> RefusedList:
    """The list as the matcher needs it; ValueError naming the entry at fault (a defect of the package)."""
    families = {str(k): str(v) for k, v in (data.get("families") or {}).items()}
    places = tuple(words(p) for p in (data.get("california") or {}).get("places", []))
    entries = []
    for n, raw in enumerate(data.get("entry") or [], start=1):
        where = f"{REFUSED_LIST}: entry {n} ({raw.get('name', 'no name')})"
        if raw.get("family") not in families:
            raise ValueError(f"{where}: family {raw.get('family')!r} is not one of [families]")
        texts = list(raw.get("terms", []))
        texts += [form.format(place=place) for form in raw.get("forms", []) for place in raw.get("places", [])]
        terms = tuple(words(t) for t in texts)
        if not terms or not all(terms):
            raise ValueError(f"{where}: every entry needs terms, and a term needs a word")
        codes = frozenset(raw.get("ori_codes", []))
        if any(not re.fullmatch(r"[A-Z]{3}", c) for c in codes):
            raise ValueError(f"{where}: an ORI code is the three capital letters after the state code")
        entries.append(Listed(raw["family"], str(raw["name"]), terms, codes))
    return RefusedList(families, places, tuple(entries))


@functools.cache
def refused_list() -> RefusedList:
    """The list of refused recipients shipped with the package, read on first use."""
    text = resources.files("appliance").joinpath(REFUSED_LIST).read_text(encoding="utf-8")
    return _parse_list(tomllib.loads(text))


def _starts(found: tuple[str, ...], term: tuple[str, ...]) -> Iterator[int]:
    for start in range(len(found) - len(term) + 1):
        if found[start : start + len(term)] == term:
            yield start


def listed_name(name: str) -> tuple[Listed, str] | None:
    """The entry the name matches and the words that matched, or None. Of several matches the
    longest term wins (the most specific), then the one the name says first."""
    refused = refused_list()
    found = words(name)
    inside_places: set[int] = set()
    for place in refused.places:  # "National City" is a California city, not a national body
        for start in _starts(found, place):
            inside_places.update(range(start, start + len(place)))
    best: tuple[tuple[int, int, int], Listed, tuple[str, ...]] | None = None
    for order, entry in enumerate(refused.entries):
        for term in entry.terms:
            for start in _starts(found, term):
                if set(range(start, start + len(term))) <= inside_places:
                    continue
                key = (-len(term), start, order)
                if best is None or key < best[0]:
                    best = (key, entry, term)
                break
    return None if best is None else (best[1], " ".join(best[2]))


# -- who may receive ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a recipient is refused: the input it rests on, the kind of recipient, and for the list
    the entry and the words (or ORI letters) that matched."""

    field: str
    family: str
    why: str
    entry: str | None = None
    term: str | None = None

    @property
    def message(self) -> str:
        return (
            f"Refused: {self.why}. ALPR information may be shared only with California state and local public "
            f"agencies ({STATUTE}; {BULLETIN}: no out-of-state, federal or private recipients). "
            "Nothing has been shared."
        )


def _ori_text(value: str | None) -> str:
    return re.sub(r"[\s\-]", "", value or "").upper()


def screen(agency_type: str, agency_state: str, agency_name: str = "", agency_ori: str = "") -> Refusal | None:
    """Why this recipient may not receive ALPR data, or None when it may: its type, its state, its
    ORI (a California agency's begins with CA; a federal office's carries its agency's letters) and
    its name against the list of refused recipients. An empty ORI is not judged here (a request
    needs one: _checked; an old request without one cannot be approved: missing_for_approval)."""
    state = (agency_state or "").strip().upper()
    ori = _ori_text(agency_ori)
    refused = refused_list()
    on_list = f"on the list of refused recipients (appliance/{REFUSED_LIST})"
    if agency_type in REFUSED_TYPES:
        return Refusal("agency_type", agency_type, _WHY[agency_type])
    if agency_type in ALLOWED_TYPES and state != "CA":
        why = f"the agency is in {state or 'an unstated state'}, not California, so it is an out-of-state agency"
        return Refusal("agency_state", "out-of-state", why)
    if ori and not ori.startswith("CA"):
        why = (
            f"the ORI {ori} begins with {ori[:2]}, not CA: a California agency's ORI begins with CA, so this "
            "agency is not a California one"
        )
        return Refusal("agency_ori", "out-of-state", why)
    for entry in refused.entries if ori else ():
        if ori[2:5] in entry.ori_codes:
            why = (
                f"the ORI {ori} carries {ori[2:5]} after its state code, the letters of {entry.name} {on_list}: "
                f"{refused.families[entry.family]}"
            )
            return Refusal("agency_ori", entry.family, why, entry.name, ori[2:5])
    hit = listed_name(agency_name)
    if hit is not None:
        entry, term = hit
        why = (
            f'the agency name "{agency_name.strip()}" matches "{term}" ({entry.name}) {on_list}: '
            f"{refused.families[entry.family]} (a California public agency refused by mistake is a defect of "
            "that list: report it, do not rename the agency to get past it)"
        )
        return Refusal("agency_name", entry.family, why, entry.name, term)
    return None


def refusal(agency_type: str, agency_state: str, agency_name: str = "", agency_ori: str = "") -> str | None:
    """The refusal message for this recipient (see screen()), or None when it may receive."""
    found = screen(agency_type, agency_state, agency_name, agency_ori)
    return found.message if found else None


def missing_for_approval(req: SharingRequest) -> list[str]:
    """What a request recorded before migration 0011 lacks and an approval (or export) needs."""
    missing = []
    if not req.agency_ori:
        missing.append("the recipient's ORI")
    if not req.assurance:
        missing.append("the recipient's written assurance")
    return missing


def _text(value, field: str, label: str, max_len: int, min_len: int = 2) -> str:
    value = re.sub(r"\s+", " ", (value or "")).strip()
    if len(value) < min_len:
        raise SharingError(f"{label} is required ({min_len} characters at least)", field)
    if len(value) > max_len:
        raise SharingError(f"{label} is too long ({len(value)} characters, at most {max_len})", field)
    return value


def _recipient_state(new: NewRequest) -> str:
    if new.agency_type not in AGENCY_TYPES:
        raise SharingError(
            f"unknown agency type {new.agency_type!r}; choose one of {', '.join(AGENCY_TYPES)}", "agency_type"
        )
    state = (new.agency_state or "").strip().upper()
    if not _STATE.fullmatch(state):
        raise SharingError(
            f"agency state {new.agency_state!r} must be a two-letter postal code such as CA", "agency_state"
        )
    return state


def _recipient_ori(value: str | None) -> str:
    ori = _ori_text(value)
    if not ori:
        raise SharingError(
            f"the recipient's ORI is required: the NCIC originating agency identifier of the requesting agency, "
            f"nine characters such as {_ORI_EXAMPLE} (on its letterhead or in CLETS)",
            "agency_ori",
        )
    if not _ORI.fullmatch(ori):
        raise SharingError(
            f"the recipient's ORI {value!r} must be nine characters: two letters (the state, CA for a California "
            f"agency) then seven letters or digits, such as {_ORI_EXAMPLE}",
            "agency_ori",
        )
    return ori


def _checked(new: NewRequest) -> NewRequest:
    """The request with its fields cleaned, or SharingError naming the first bad field."""
    out = dataclasses.replace(
        new,
        agency_state=_recipient_state(new),
        agency_name=_text(new.agency_name, "agency_name", "The agency's name", 120),
        requester_name=_text(new.requester_name, "requester_name", "The name of the person requesting", 120),
        requester_title=_text(new.requester_title, "requester_title", "The requester's title or rank", 120),
        requester_contact=_text(
            new.requester_contact, "requester_contact", "The requester's contact (telephone or e-mail)", 160, 5
        ),
        intended_purpose=_text(new.intended_purpose, "intended_purpose", "The intended purpose", 2000, 10),
        legal_authority=_text(
            new.legal_authority, "legal_authority", "The legal authority or the requesting agency's case number", 200, 3
        ),
        agency_ori=_recipient_ori(new.agency_ori),
        assurance=_text(
            new.assurance,
            "assurance",
            "The recipient's written assurance that the data goes to no one but California state or local public "
            f"agencies ({BULLETIN})",
            2000,
            MIN_ASSURANCE,
        ),
    )
    if new.match_mode not in MATCH_MODES:
        raise SharingError(f"match {new.match_mode!r} must be one of {', '.join(MATCH_MODES)}", "match_mode")
    try:
        plate = search.normalise(new.plate, new.match_mode)
    except search.SearchError as exc:
        raise SharingError(str(exc), "plate") from None
    if search.candidate_queries(search.Query(plate, new.match_mode)) is None:
        # The rule of a search without a time range: a request names the plate it asks for, and
        # a pattern with fewer known characters in a row sweeps up other vehicles' reads.
        raise SharingError(
            f"the plate {plate} has no three known characters in a row: a request names the plate it asks "
            "for, so give at least three known characters in a row (such as 7AB* or *C123)",
            "plate",
        )
    if new.period_start_at is None or new.period_end_at is None:
        raise SharingError(
            "the period (from and to) is required: a request names the time span it asks for",
            "period_start_at" if new.period_start_at is None else "period_end_at",
        )
    if new.period_end_at <= new.period_start_at:
        raise SharingError("the period ends before it starts", "period_end_at")
    if new.period_end_at - new.period_start_at > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise SharingError(
            f"the period is longer than {MAX_PERIOD_DAYS} days; ask for the span the case needs", "period_end_at"
        )
    return dataclasses.replace(out, plate=plate)


def create(settings: Settings, actor: audit.Actor, new: NewRequest, purpose: audit.Purpose) -> SharingRequest:
    """Record a written request (status pending). A recipient that is not a California public agency
    is refused (RecipientRefused) and the refusal itself is logged; other bad input raises SharingError."""
    purpose = audit.check_purpose(settings, purpose.code, purpose.case_number)
    _recipient_state(new)
    ori = _ori_text(new.agency_ori)
    # A refused recipient is refused (and logged) even while its ORI is missing or mistyped: the
    # person entering it learns that first, not after correcting the ORI.
    found = screen(new.agency_type, new.agency_state, new.agency_name, ori if _ORI.fullmatch(ori) else "")
    if found:
        with write():
            audit.record(
                "sharing.refuse",
                actor,
                purpose=purpose,
                details={
                    "agency_name": (new.agency_name or "")[:120],
                    "agency_type": new.agency_type,
                    "agency_state": (new.agency_state or "")[:8],
                    "agency_ori": ori[:16],
                    "reason": found.message,
                    "listed": found.entry,
                    "term": found.term,
                },
            )
        raise RecipientRefused(found.message, found.field)
    new = _checked(new)
    with write():
        req = SharingRequest.create(
            **dataclasses.asdict(new),
            purpose_code=purpose.code,
            case_number=purpose.case_number,
            status="pending",
            created_by=actor.username,
            created_organization=actor.organization,
        )
        audit.record(
            "sharing.request",
            actor,
            query=req.as_record(),
            purpose=purpose,
            objects=[f"sharing_request:{req.id}"],
            details={
                "agency_name": req.agency_name,
                "agency_type": req.agency_type,
                "agency_state": req.agency_state,
                "agency_ori": req.agency_ori,
                "requester": req.requester_name,
                "legal_authority": req.legal_authority,
            },
        )
    return req


def get(request_id: int) -> SharingRequest:
    """The request, unrecorded: for the steps that record themselves. People look through view()."""
    req = SharingRequest.get_or_none(SharingRequest.id == request_id)
    if req is None:
        raise SharingError(f"no sharing request {request_id}", "request")
    return req


def view(
    actor: audit.Actor, request_id: int, purpose: audit.Purpose
) -> tuple[SharingRequest, list[SharingExport], Coverage | None]:
    """One request, its exports (newest last) and what an export made now would hold (None for a
    denied request: it releases nothing, so nothing is counted). The viewing is recorded
    (sharing.view, with the counts) in the same transaction. An unknown id raises SharingError and
    records nothing."""
    with write():
        req = get(request_id)
        exports = list(req.exports.order_by(SharingExport.id))  # type: ignore[attr-defined]  # peewee adds the backref exports
        covers = None if req.status == "denied" else coverage(req)
        details: dict[str, str | int] = {
            "plate": req.plate,
            "agency_name": req.agency_name,
            "purpose_code": req.purpose_code,
            "case_number": req.case_number,
        }
        if covers is not None:
            details.update(reads_covered=covers.read_count, images_covered=covers.image_count)
        audit.record(
            "sharing.view",
            actor,
            query={"sharing_request": req.id, "plate": req.plate},
            purpose=purpose,
            result_count=1,
            objects=[f"sharing_request:{req.id}"],
            details=details,
        )
    return req, exports, covers


@dataclasses.dataclass(frozen=True)
class Coverage:
    """What an export of a request made now would hold: its reads and their distinct images."""

    read_count: int
    image_count: int
    problem: str = ""  # why they could not be counted (the request's query cannot be run)


def coverage(req: SharingRequest, batch: int = 500) -> Coverage:
    """Count the reads and images the request covers with matching_reads, the export's own query,
    so the reviewer sees before approving what the approval releases. An image shared by two reads
    counts once, as in the ZIP."""
    reads = 0
    images: set[str] = set()
    ids: list[int] = []
    try:
        for read in matching_reads(req):
            reads += 1
            ids.append(read.id)
            if len(ids) == batch:
                images.update(_image_hashes(ids))
                ids = []
        images.update(_image_hashes(ids))
    except search.SearchError as exc:
        return Coverage(0, 0, f"the request's query cannot be run: {exc}")
    return Coverage(reads, len(images))


def _image_hashes(read_ids: list[int]) -> set[str]:
    if not read_ids:
        return set()
    rows = Evidence.select(Evidence.sha256).where(Evidence.read.in_(read_ids), Evidence.kind.in_(("crop", "frame")))
    return {e.sha256 for e in rows}


def coverage_lines(covers: Coverage | None) -> list[str]:
    """The coverage as `waypost sharing show` prints it (nothing for a denied request)."""
    if covers is None:
        return []
    if covers.problem:
        return [f"Covers now:        cannot be counted: {covers.problem}"]
    return [
        f"Covers now:        {covers.read_count} read(s) and {covers.image_count} image(s): what an export made "
        "now would hold (counted with the export's own query)"
    ]


def decide(settings: Settings, actor: audit.Actor, request_id: int, approve: bool, note: str) -> SharingRequest:
    """Approve or deny a pending request, with the reviewer's note. The person who recorded it cannot
    decide it. An approval re-checks the recipient (type, state, ORI, the list): a request that names
    a refused recipient, or lacks the ORI or the assurance, can only be denied."""
    note = _text(note, "note", "A note explaining the decision", 2000, 3)
    with write():
        req = get(request_id)
        if req.status != "pending":
            raise SharingError(
                f"sharing request {req.id} was already {req.status} by {req.decided_by} "
                f"on {req.decided_at:%Y-%m-%d %H:%M} UTC; a decision is final",
                "decision",
            )
        if actor.username == req.created_by:
            raise SharingError(
                f"{req.created_by} recorded sharing request {req.id}, so another person must approve or deny it: "
                "one person records a request, a second one decides it. Ask another ALPR administrator or designee",
                "decision",
            )
        if approve:
            missing = missing_for_approval(req)
            if missing:
                raise SharingError(
                    f"sharing request {req.id} was recorded without {' and '.join(missing)}, which an approval needs "
                    f"(the ORI shows the recipient is a California agency; the assurance is required by {BULLETIN}): "
                    "deny it with a note, and record the request again with both",
                    "decision",
                )
            why = refusal(req.agency_type, req.agency_state, req.agency_name, req.agency_ori) or (
                None if req.agency_type in AGENCY_TYPES else f"Refused: unknown agency type {req.agency_type!r}."
            )
            if why:
                raise RecipientRefused(why + " Deny the request instead.", "decision")
        req.status = "approved" if approve else "denied"
        req.decided_by, req.decided_at, req.decision_note = actor.username, utcnow(), note
        req.save()
        audit.record(
            "sharing.approve" if approve else "sharing.deny",
            actor,
            query=req.as_record(),
            purpose=req.purpose,
            objects=[f"sharing_request:{req.id}"],
            details={"agency_name": req.agency_name, "note": note},
        )
    return req


def matching_reads(req: SharingRequest, page: int = 100) -> Iterator[Read]:
    """The reads the request covers, newest first, a page at a time (memory stays bounded)."""
    q = req.query()
    before = None
    while True:
        found = search.search(q, limit=page, before=before)
        for hit in found.hits:
            yield hit.read
        if found.next_before is None:
            return
        before = found.next_before


def export(settings: Settings, actor: audit.Actor, request_id: int, out: Path):
    """Write the evidence ZIP of an approved request to `out` (returns export.Summary).
    NotApproved, before anything is read or written, for any other status."""
    req = get(request_id)
    _require_approved(req)

    def still_allowed():
        fresh = get(request_id)
        _require_approved(fresh)

    def recorded(record, summary):
        SharingExport.create(
            request=req.id,
            exported_by=actor.username,
            read_count=summary.read_count,
            image_count=summary.image_count,
            data_sha256=summary.data_sha256,
            record_seq=record.seq,
        )

    reason = exporting.Reason(
        action="sharing.export",
        purpose=req.purpose,
        query=req.as_record(),
        objects=[f"sharing_request:{req.id}"],
        subject=f"sharing request {req.id}",
        statement=statement_lines(req),
        still_allowed=still_allowed,
        recorded=recorded,
    )
    try:
        return exporting.build_zip(settings, actor, matching_reads(req), reason, out=out)
    except search.SearchError as exc:
        raise SharingError(f"the request's query cannot be run: {exc}", "plate") from None


def _require_approved(req: SharingRequest) -> None:
    if req.status != "approved":
        raise NotApproved(
            f"sharing request {req.id} is {req.status}, not approved: only an approved request can "
            "produce an export (the ALPR administrator reviews it first). Nothing was exported.",
            "status",
        )
    for field, value in (("assurance", req.assurance), ("agency_ori", req.agency_ori)):
        if not value:
            what = "written assurance" if field == "assurance" else "ORI"
            raise SharingError(
                f"sharing request {req.id} has no {what} of the recipient on file (it was recorded before one was "
                f"required), and an export carries both ({BULLETIN}): record the request again with the ORI and "
                "the assurance and have it approved. Nothing was exported.",
                field,
            )
    found = screen(req.agency_type, req.agency_state, req.agency_name, req.agency_ori)
    if found:
        raise RecipientRefused(found.message, found.field)


def statement_lines(req: SharingRequest) -> list[str]:
    """The export's statement: the request, its approval and the legal basis (an approved request)."""
    return request_lines(req) + [
        f"Approved by:       {req.decided_by} on {req.decided_at:%Y-%m-%d %H:%M} UTC: {req.decision_note}",
        f"Legal basis:       {STATUTE}; {BULLETIN}. The recipient was checked to be a California "
        "state or local public agency (its type, state, ORI and name against the list of refused recipients) "
        "when the request was recorded, approved and exported.",
        "Onward sharing:    not permitted. This data may be passed on only to California state or local public "
        f"agencies, never to a federal, out-of-state or private recipient ({STATUTE}; {BULLETIN}): the recipient's "
        "written assurance above says so.",
    ]


def request_lines(req: SharingRequest) -> list[str]:
    """The request as filed, whatever its status."""
    return [
        f"Sharing request:   {req.id}",
        f"Recipient agency:  {req.agency_name} ({req.agency_type_label}), state {req.agency_state}, "
        f"ORI {req.agency_ori or 'not recorded'}",
        f"Requested by:      {req.requester_name}, {req.requester_title} ({req.requester_contact})",
        f"Intended purpose:  {req.intended_purpose}",
        f"Legal authority:   {req.legal_authority}",
        "Assurance:         "
        + (
            f'"{req.assurance}" (the recipient\'s written assurance, {BULLETIN})'
            if req.assurance
            else "not recorded (the request was recorded before a written assurance was required)"
        ),
        f"Data requested:    plate {req.plate} ({req.match_mode}), "
        f"{req.period_start_at:%Y-%m-%d %H:%M} to {req.period_end_at:%Y-%m-%d %H:%M} UTC",
        f"Recorded by:       {req.created_by} ({req.created_organization}) on {req.created_at:%Y-%m-%d %H:%M} UTC, "
        f"purpose {req.purpose_code}, case {req.case_number}",
    ]


def listing(
    actor: audit.Actor, purpose: audit.Purpose, status: str | None = None, limit: int = 200
) -> list[SharingRequest]:
    """Requests on file, newest first; the listing itself is recorded (sharing.list), with its
    purpose and the plates the requests name."""
    if status is not None and status not in STATUSES:
        raise SharingError(f"status {status!r} must be one of {', '.join(STATUSES)}", "status")
    with write():
        q = SharingRequest.select().order_by(SharingRequest.id.desc()).limit(limit)
        if status:
            q = q.where(SharingRequest.status == status)
        found = list(q)
        audit.record(
            "sharing.list",
            actor,
            query={"status": status or "all", "plates": sorted({r.plate for r in found})},
            purpose=purpose,
            result_count=len(found),
            objects=[f"sharing_request:{r.id}" for r in found],
        )
    return found
