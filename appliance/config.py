"""Typed configuration: one TOML file plus WAYPOST_SECTION__KEY environment overrides.

Every key has a type, a default that works out of the box, bounds where a value can be out of
range, and a description (the README's configuration table is generated from these, and a test
keeps it in step). Unknown keys, wrong types and out-of-range values are errors that name the key
path; `waypost config check` lists all of them at once.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "WAYPOST_"
CONFIG_ENV = "WAYPOST_CONFIG"
# a SHA-256 fingerprint in hex, with or without the colons openssl prints; or empty
PIN_PATTERN = r"^(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})?$"


class ConfigError(Exception):
    """One or more problems with the configuration; `problems` lists them as (key path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = ""):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} configuration problem(s){where}:"]
        lines += [f"  {key}: {message}" for key, message in problems]
        super().__init__("\n".join(lines))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class PostSettings(Section):
    id: str = Field(
        "post-1",
        pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
        description="Identity of this post: lower-case letters, digits and dashes. Unique within the agency; "
        "headquarters files every read under it.",
    )
    name: str = Field("Demo post", min_length=1, max_length=80, description="Human name of the site shown in the UI.")
    agency: str = Field(
        "Demo Police Department",
        min_length=1,
        max_length=120,
        description="The agency operating the post; recorded as the organization of local accounts.",
    )
    camera_id: str = Field(
        "cam-1",
        pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
        description="Identity of the camera at this post, stored with every read.",
    )
    camera_name: str = Field("Camera 1", min_length=1, max_length=80, description="Human name of the camera.")
    timezone: str = Field("America/Los_Angeles", description="Time zone for display; everything is stored in UTC.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as America/Los_Angeles)") from None
        return value


class StorageSettings(Section):
    data_dir: Path = Field(
        Path("var"),
        description="Directory for the database, evidence images and keys. "
        "Relative paths are taken from the working directory.",
    )
    db_file: str = Field("waypost.db", min_length=1, description="SQLite database file name inside data_dir.")
    evidence_dir: str = Field(
        "evidence", min_length=1, description="Directory inside data_dir for plate crops and frames."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite synchronous mode. FULL makes every committed read survive a power cut; "
        "NORMAL is faster but may lose the last transactions (never corrupts).",
    )
    busy_timeout_ms: int = Field(
        5000, ge=100, le=60000, description="How long a writer waits for a lock before failing."
    )
    cache_kib: int = Field(8192, ge=512, le=262144, description="SQLite page cache size in KiB (kept modest for a Pi).")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality for stored crops and frames.")
    min_free_mb: int = Field(
        512,
        ge=0,
        le=1_000_000,
        description="Refuse to store new evidence when the data disk has less free space than this.",
    )


class CaptureSettings(Section):
    type: Literal["demo", "picamera2", "video", "folder", "stream"] = Field(
        "demo", description="Frame source. `demo` is a built-in synthetic street for machines without a camera."
    )
    source: str = Field("", description="File (video), directory (folder) or URL (stream, e.g. rtsp://...).")
    fps: float = Field(10.0, gt=0, le=60, description="Frames per second to process (sources are paced to this).")
    loop: bool = Field(True, description="Start a video file or image folder again at its end.")
    width: int = Field(1280, ge=320, le=4608, description="Frame width for the demo and picamera2 (evidence) streams.")
    height: int = Field(720, ge=240, le=3456, description="Frame height for the demo and picamera2 (evidence) streams.")
    detect_width: int = Field(
        960, ge=320, le=4608, description="Width of the low-resolution stream picamera2 delivers for detection."
    )
    exposure_time_us: int = Field(
        1000, ge=0, le=100000, description="picamera2 exposure; short (~1 ms) keeps moving plates sharp; 0 = auto."
    )
    analogue_gain: float = Field(0.0, ge=0.0, le=16.0, description="picamera2 analogue gain; 0 = automatic.")
    reconnect_max_s: float = Field(
        30.0, ge=1.0, le=600.0, description="Longest wait between attempts to reopen a lost camera or stream."
    )
    stall_timeout_s: float = Field(
        5.0,
        ge=0.5,
        le=120.0,
        description="A wait for a frame longer than this is a camera stall: reported, reconnected.",
    )
    stall_restart_s: float = Field(
        120.0,
        ge=1.0,
        le=3600.0,
        description="A stall longer than this stops the systemd watchdog pings, so systemd restarts the service.",
    )
    demo_vehicles_per_min: float = Field(12.0, gt=0, le=120, description="Traffic density of the demo street.")
    demo_seed: int = Field(0, ge=0, description="Seed of the demo street (same seed, same traffic).")


class PipelineSettings(Section):
    roi: tuple[float, float, float, float] = Field(
        (0.0, 0.0, 1.0, 1.0), description="Region of interest as fractions of the frame: left, top, right, bottom."
    )
    motion_threshold: int = Field(18, ge=1, le=255, description="Grey-level change that counts as motion.")
    min_motion_fraction: float = Field(
        0.002, ge=0.0, le=1.0, description="Share of the region of interest that must change before a frame is read."
    )
    pass_timeout_s: float = Field(
        1.5, gt=0, le=30, description="A vehicle pass ends when its plate is unseen this long."
    )
    min_frames_per_pass: int = Field(1, ge=1, le=30, description="Plate sightings needed before a pass is stored.")

    @field_validator("roi")
    @classmethod
    def _ordered(cls, value):
        left, top, right, bottom = value
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError("roi must be left < right and top < bottom, all between 0 and 1")
        return value


class HotlistSettings(Section):
    stale_after_hours: int = Field(
        72, ge=1, le=720, description="A list not refreshed for this long produces no alerts (policy: 72 h)."
    )
    plate_column: str = Field("plate", min_length=1, description="CSV column holding the plate (NCIC: LIC).")
    state_column: str = Field("state", min_length=1, description="CSV column holding the issuing state (NCIC: LIS).")
    reason_column: str = Field("reason", min_length=1, description="CSV column holding the reason or category.")
    entry_date_column: str = Field(
        "entry_date", min_length=1, description="CSV column holding the entry date (NCIC: DTE)."
    )
    source_ref_column: str = Field(
        "source_ref",
        min_length=1,
        description="CSV column holding the source's reference (NCIC: NIC), copied to each alert; "
        "a reference that appears twice in a file is refused.",
    )
    plate_type_column: str = Field(
        "plate_type", min_length=1, description="CSV column holding the plate type (NCIC: LIT, e.g. PC)."
    )
    plate_year_column: str = Field(
        "plate_year", min_length=1, description="CSV column holding the plate's expiry year (NCIC: LIY)."
    )
    vehicle_make_column: str = Field(
        "vehicle_make", min_length=1, description="CSV column holding the vehicle make dispatch relays (MKE)."
    )
    ori_column: str = Field(
        "ori",
        min_length=1,
        description="CSV column holding the entering agency's ORI (NCIC: ORI), copied to each alert beside the NIC.",
    )
    date_format: str = Field(
        "%Y-%m-%d", min_length=2, description="strftime format of the entry date column (e.g. %Y%m%d for 20261120)."
    )
    custom_review_days: int = Field(
        30,
        ge=1,
        le=365,
        description="A custom entry raises alerts for this many days after it is made or last renewed "
        "(`waypost hotlist renew`), then none until it is renewed.",
    )


class AlertSettings(Section):
    min_score: float = Field(0.6, ge=0.0, le=1.0, description="Lowest match score that raises an alert.")
    command: str = Field(
        "",
        description="Local command run for each new alert (e.g. a buzzer script); "
        "gets the alert as JSON on standard input.",
    )
    webhook_url: str = Field("", description="URL that receives each new alert as a JSON POST (e.g. dispatch).")
    gpio_pin: int | None = Field(None, ge=0, le=40, description="GPIO pin driven high for 3 s on a new alert.")
    repeat_window_s: int = Field(
        300,
        ge=0,
        le=86_400,
        description=(
            "An alert for the same hotlist entry within this many seconds of the last alert sent for it "
            "(a car circling the block, or one pass split by a short dropout) is kept as a repeat of that "
            "alert: listed and unconfirmed like any alert, but not sent to the command, webhook, GPIO pin "
            "or live list again. 0 sends every alert."
        ),
    )


class RecognizerSettings(Section):
    models_dir: Path | None = Field(
        None,
        description="Directory with detector.tflite and ocr.tflite; "
        "empty means the models shipped in recognizer/models.",
    )
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime"] = Field(
        "auto", description="TFLite runtime; auto takes ai_edge_litert, then tflite_runtime."
    )
    threads: int = Field(2, ge=1, le=8, description="Inference threads.")
    min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="Reads below this are kept but marked low-confidence."
    )
    second_look: bool = Field(
        True,
        description="When a frame shows no plate, search its four corner windows at "
        "twice the resolution (small, distant plates; 4 more detector runs "
        "on such frames).",
    )
    ocr_views: int = Field(
        3,
        ge=1,
        le=3,
        description="Crops of each detected plate the OCR reads together (usual, tight "
        "and loose margins; their scores are averaged): 1 to 3, 1 is the fastest.",
    )


class WebSettings(Section):
    host: str = Field(
        "127.0.0.1", description="Address the web UI listens on. A post behind the TLS proxy keeps 127.0.0.1."
    )
    port: int = Field(8080, ge=1, le=65535, description="Port of the web UI.")
    threads: int = Field(
        8,
        ge=2,
        le=64,
        description="waitress worker threads. Each open live stream (live view, alerts page) holds one; streams "
        "may take at most half of them, so pages and sign-in always have the rest.",
    )
    streams_per_account: int = Field(
        2,
        ge=1,
        le=16,
        description="Live streams (live view, alerts page) one account may have open at once; one more, or one "
        "past half of web.threads for the whole post, is answered 503 with Retry-After and the page tries "
        "again later by itself.",
    )
    secret_key_file: str = Field(
        "secret_key",
        min_length=1,
        description="File inside data_dir holding the session signing key (made on first start).",
    )
    session_idle_minutes: int = Field(
        30, ge=1, le=480, description="A session ends after this many idle minutes (CJIS: 30)."
    )
    secure_cookies: bool = Field(False, description="Mark cookies Secure. Turn on when the UI is served over TLS.")
    trusted_proxy: bool = Field(
        False,
        description="Trust X-Forwarded-For/Proto from a reverse proxy on this host (connecting from 127.0.0.1): "
        "the access log and the sign-in throttle then see the client's address.",
    )
    failed_logins_before_lockout: int = Field(
        5,
        ge=1,
        le=20,
        description="Failed sign-ins in a row before an account is locked (CJIS), which also ends its sessions. "
        "The lock refuses addresses with a failed sign-in (web.failed_login_window_minutes); as many failures "
        "again during the lock, from other addresses, lock it for every address.",
    )
    lockout_minutes: int = Field(30, ge=1, le=1440, description="How long a locked account stays locked.")
    failed_logins_per_address: int = Field(
        10,
        ge=1,
        le=100,
        description="Failed sign-ins from one client address (any username) within "
        "web.failed_login_window_minutes before that address is refused (HTTP 429) until the oldest of them is "
        "older than the window. Behind web.trusted_proxy the address is the client's from X-Forwarded-For.",
    )
    failed_login_window_minutes: int = Field(
        15,
        ge=1,
        le=1440,
        description="How long a failed sign-in counts against its address. A locked account still signs in, with "
        "the right password, from an address with no failed sign-in in this window.",
    )
    min_password_length: int = Field(12, ge=8, le=128, description="Minimum password length.")


class SearchSettings(Section):
    time_cap_s: float = Field(
        10.0,
        ge=1.0,
        le=300.0,
        description="Longest one plate search may run; past it the search is stopped, nothing is shown and it is "
        "recorded as refused. A search reads a snapshot, so it never holds up the pipeline's writes; the cap "
        "bounds the web thread and the core it takes.",
    )
    heavy_per_user: int = Field(
        1,
        ge=1,
        le=8,
        description="Heavy searches (a pattern the index narrows by fewer than two trigrams, such as 1?1?1?1 over a "
        "time range) one account may run at once; another is refused (HTTP 429) and recorded as refused.",
    )
    heavy_at_once: int = Field(
        2,
        ge=1,
        le=16,
        description="Heavy searches the post runs at once, all accounts together (the pipeline needs the cores "
        "too); another is refused as busy (HTTP 503) and recorded as refused.",
    )


class Purpose(Section):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_-]{1,19}$", description="Short code stored in access records.")
    label: str = Field(min_length=3, max_length=120, description="What the code means, shown to users.")


DEFAULT_PURPOSES = (
    Purpose(code="STOLEN-VEH", label="Stolen vehicle or plate investigation"),
    Purpose(code="WANTED", label="Wanted person or warrant"),
    Purpose(code="MISSING", label="Missing person, Amber or Silver alert"),
    Purpose(code="CRIME-INV", label="Investigation of a specific crime (case number required)"),
    Purpose(code="HIT-VERIFY", label="Verifying a hotlist hit"),
    Purpose(code="AUDIT", label="Audit of system use"),
    Purpose(code="SHARING", label="Reviewing or fulfilling another agency's written data-sharing request"),
    Purpose(code="COURT", label="Court order or subpoena"),
)


class AuditSettings(Section):
    purposes: tuple[Purpose, ...] = Field(
        DEFAULT_PURPOSES, min_length=1, description="Purpose codes a user picks from before any access to ALPR data."
    )
    case_number_pattern: str = Field(
        r"^[A-Za-z0-9][A-Za-z0-9/._-]{2,39}$",
        description="Case or incident numbers must match this and contain a digit.",
    )

    @field_validator("case_number_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("purposes")
    @classmethod
    def _unique(cls, value):
        codes = [p.code for p in value]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"purpose codes must be unique; repeated: {', '.join(dup)}")
        return value


class SyncSettings(Section):
    enabled: bool = Field(False, description="Send reads, images and access records to headquarters.")
    hq_url: str = Field("", description="Base URL of headquarters, e.g. https://hq.example.org.")
    key_file: str = Field("post_key", min_length=1, description="File inside data_dir with this post's signing key.")
    batch_max_reads: int = Field(200, ge=1, le=10000, description="Most reads in one batch.")
    push_interval_s: int = Field(60, ge=5, le=86400, description="Seconds between push attempts when connected.")
    include_frames: bool = Field(True, description="Send context frames as well as plate crops.")
    frame_lane: bool = Field(
        True,
        description="Send the context frames of reads without an alert in a second lane, after every read, crop, "
        "alert (with its frame) and access record waiting: a frame is about forty crops. Headquarters lists "
        "the frames still to come.",
    )
    frame_batch_kb: int = Field(
        2048,
        ge=64,
        le=32768,
        description="About how many KB of frames one batch of the second lane carries: a read stored meanwhile "
        "waits for one such batch at most (2048 KB: under 2 s at 10 Mbit/s).",
    )
    max_kbps: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Most kilobits per second this post sends to headquarters (a shared or metered link); "
        "0: as fast as the link goes.",
    )
    hq_public_key: str = Field(
        "",
        pattern=r"^([A-Za-z0-9+/]{43}=)?$",
        description="Headquarters' public key (base64, from `waypost hq keygen`) allowed to "
        "pull batches from this post at /sync/batch; empty: pull is off.",
    )
    ca_file: str = Field(
        "",
        description="PEM file of the CA (or the self-signed certificate) that headquarters' HTTPS certificate "
        "must be signed by, for pushes and signed GETs; empty: the system's CAs.",
    )
    pin_sha256: str = Field(
        "",
        pattern=PIN_PATTERN,
        description="Optional SHA-256 fingerprint of headquarters' certificate (hex, colons allowed), checked "
        "after the handshake: a replaced certificate is refused until this is changed.",
    )
    pull_ca_file: str = Field(
        "",
        description="Headquarters: PEM file of the CAs (or the posts' self-signed certificates, one after "
        "another) that posts' HTTPS certificates must be signed by when pulling; empty: the system's CAs.",
    )
    pull_pin_sha256: list[str] = Field(
        [],
        description="Headquarters: optional SHA-256 fingerprints of the posts' certificates; with any given, "
        "a post's certificate must have one of them when pulling.",
    )
    max_backoff_s: int = Field(
        60,
        ge=5,
        le=3600,
        description="Longest wait between push attempts while headquarters does not answer: it is noticed "
        "back within this long.",
    )
    stale_after_minutes: int = Field(
        60,
        ge=1,
        le=10080,
        description="/health says degraded (sync) when the oldest read not yet at headquarters is older than this.",
    )
    degraded_after_failures: int = Field(
        3, ge=1, le=1000, description="/health says degraded (sync) after this many push attempts in a row failed."
    )
    late_after_minutes: int = Field(
        60,
        ge=1,
        le=10080,
        description="Headquarters: a post with no contact for longer than this is shown late (Posts page, "
        "`waypost hq status`); raise it where posts are only pulled, e.g. nightly.",
    )
    clock_warn_s: int = Field(
        120,
        ge=1,
        le=86400,
        description="/health says degraded (sync), and headquarters warns, when a post's clock is off from "
        "headquarters' by more than this.",
    )

    @field_validator("pull_pin_sha256")
    @classmethod
    def _pins(cls, value):
        bad = [pin for pin in value if not re.match(PIN_PATTERN, pin) or not pin]
        if bad:
            raise ValueError(f"not SHA-256 fingerprints (64 hex digits, colons allowed): {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _url_when_enabled(self):
        if self.enabled and not re.match(r"^https?://[^\s/]+", self.hq_url):
            raise ValueError("hq_url must be an http(s) URL when sync is enabled")
        return self


class RetentionSettings(Section):
    read_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="Reads and their images are purged after this many days unless under legal hold.",
    )
    hit_read_days: int = Field(365, ge=1, le=3650, description="Retention for reads that matched a hotlist.")
    audit_days: int = Field(
        1825,
        ge=365,
        le=36500,
        description="Access records are kept at least this long (at least a year); they are not purged yet: "
        "deleting the oldest would break the hash chain, so each retention run reports how many are past it.",
    )
    run_at: str = Field(
        "03:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time of the daily purge (HH:MM)."
    )
    purge_unsent: bool = Field(
        False,
        description="With sync enabled or pull set up (sync.hq_public_key), "
        "also purge reads headquarters has not acknowledged yet "
        "(normally they wait, however old).",
    )


class Settings(Section):
    post: PostSettings = PostSettings()
    storage: StorageSettings = StorageSettings()
    capture: CaptureSettings = CaptureSettings()
    pipeline: PipelineSettings = PipelineSettings()
    recognizer: RecognizerSettings = RecognizerSettings()
    hotlist: HotlistSettings = HotlistSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()
    search: SearchSettings = SearchSettings()
    audit: AuditSettings = AuditSettings()
    sync: SyncSettings = SyncSettings()
    retention: RetentionSettings = RetentionSettings()

    # Derived paths: only these (and appliance/db.py) decide where files live.
    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir.expanduser().resolve()

    @property
    def db_path(self) -> Path:
        return self.data_dir / self.storage.db_file

    @property
    def evidence_path(self) -> Path:
        return self.data_dir / self.storage.evidence_dir

    def purpose_codes(self) -> list[str]:
        return [p.code for p in self.audit.purposes]


SECTIONS = tuple(Settings.model_fields)


def _env_overrides(environ) -> tuple[dict, list[tuple[str, str]]]:
    """WAYPOST_WEB__PORT=8081 -> {"web": {"port": 8081}}. Values are read as TOML when they parse
    (numbers, booleans, lists) and as plain strings otherwise."""
    data: dict = {}
    problems = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in SECTIONS or len(parts) != 2 or not parts[1]:
            problems.append(
                (name, f"not a configuration key (sections: {', '.join(SECTIONS)}; form WAYPOST_SECTION__KEY)")
            )
            continue
        value = raw
        if not _is_text(parts[0], parts[1]):  # WAYPOST_POST__ID=12 is the id "12", not a number
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                pass
        data.setdefault(parts[0], {})[parts[1]] = value
    return data, problems


def _is_text(section: str, key: str) -> bool:
    """Whether the key holds text (a str, or a str or nothing): its environment value is taken as is."""
    model = Settings.model_fields[section].annotation
    assert model is not None  # every section of Settings is annotated with its model class
    field = model.model_fields.get(key)
    return field is not None and field.annotation in (str, str | None)


def _from_env(key_path: str, env_data: dict) -> bool:
    section, _, key = key_path.partition(".")
    return key.split(".")[0] in env_data.get(section, {})


def _env_name(key_path: str) -> str:
    section, _, key = key_path.partition(".")
    return f"{key_path} (environment variable {ENV_PREFIX}{section.upper()}__{key.split('.')[0].upper()})"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        out.append((path, msg))
    return out


def default_config_path() -> Path | None:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    candidate = Path("waypost.toml")
    return candidate if candidate.exists() else None


def load(path: str | Path | None = None, environ=None) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else "defaults"
    data: dict = {}
    problems: list[tuple[str, str]] = []
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([(str(path), "file not found")], source) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([(str(path), f"not valid TOML: {exc}")], source) from exc
    env_data, env_problems = _env_overrides(environ)
    problems += env_problems
    if env_data or env_problems:
        source += " and the environment"
    try:
        settings = Settings.model_validate(_merge(data, env_data))
    except ValidationError as exc:
        # A key set in the environment is named by its variable: that is where the value came from.
        problems += [(_env_name(key) if _from_env(key, env_data) else key, msg) for key, msg in _problems(exc)]
        settings = None
    if problems:
        raise ConfigError(problems, source)
    assert settings is not None  # a ValidationError always carries at least one error, so problems is not empty
    return settings


def describe() -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every key: the source of the README table."""
    rows = []
    for section, sfield in Settings.model_fields.items():
        model = sfield.annotation
        assert model is not None  # every section of Settings is annotated with its model class
        for key, field in model.model_fields.items():
            ann = field.annotation
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            if "Literal" in str(ann):
                type_name = " \\| ".join(repr(a).replace("'", '"') for a in ann.__args__)
            elif section == "audit" and key == "purposes":
                type_name = "list of {code, label}"
            elif key == "roi":
                type_name = "[left, top, right, bottom]"
            elif "Path" in str(ann):
                type_name = "path" + (" (optional)" if "None" in str(ann) else "")
            elif "None" in str(ann):
                type_name = next(a.__name__ for a in ann.__args__ if a is not type(None)) + " (optional)"
            default = field.default
            if key == "purposes":
                default = ", ".join(p.code for p in default)
            elif isinstance(default, str):
                default = f'"{default}"'
            elif isinstance(default, bool):
                default = str(default).lower()
            elif default is None:
                default = "(none)"
            elif isinstance(default, tuple):
                default = list(default)
            rows.append((f"{section}.{key}", type_name, str(default), field.description or ""))
    return rows


def docs_markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, description in describe():
        lines.append(f"| `{key}` | {type_name} | `{default}` | {description} |")
    return "\n".join(lines) + "\n"
