"""What `waypost init`, `waypost run` and `waypost hq serve` do before serving, safe to repeat:
migrate the database, record the post's identity and its effective configuration, settle an
interrupted evidence write, make the session key and, when there is none, a first administrator."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass

from appliance import audit, db, users
from appliance.audit import system_actor
from appliance.config import Settings
from appliance.models import AccessRecord, Camera, Post, User
from appliance.store import EvidenceStore


@dataclass
class Bootstrap:
    migrations: list[str]
    recovered: dict
    admin_password: str | None = None  # set only when a first administrator was just created


def secret_key(settings: Settings) -> bytes:
    """The session signing key, made once with mode 0600 and kept in the data directory."""
    path = settings.data_dir / settings.web.secret_key_file
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def ensure_identity(settings: Settings) -> None:
    with db.write():
        post, created = Post.get_or_create(
            id=settings.post.id, defaults={"name": settings.post.name, "agency": settings.post.agency}
        )
        if not created and (post.name, post.agency) != (settings.post.name, settings.post.agency):
            post.name, post.agency = settings.post.name, settings.post.agency
            post.save()
        Camera.get_or_create(id=settings.post.camera_id, defaults={"post": post, "name": settings.post.camera_name})


def ensure_admin(settings: Settings, environ=os.environ) -> str | None:
    """Create the first administrator when there is none. Returns the password if it was generated.
    The password must be changed at the first sign-in either way: a generated one was printed on a
    console, and one given in WAYPOST_ADMIN_PASSWORD (the provisioning vault) is known to whoever
    provisioned the host."""
    if User.select().where(User.role == "admin").exists():
        return None
    given = environ.get("WAYPOST_ADMIN_PASSWORD")
    password = given or users.generate_password()
    try:
        users.add(
            system_actor(settings),
            username=environ.get("WAYPOST_ADMIN_USERNAME", "admin"),
            display_name="ALPR administrator",
            organization=settings.post.agency,
            role="admin",
            password=password,
            job_title="ALPR Administrator",
            min_password_length=settings.web.min_password_length,
            must_change_password=True,
        )
    except users.UserError as exc:
        raise users.UserError(
            f"cannot create the first administrator: {exc}" + (" (from WAYPOST_ADMIN_PASSWORD)" if given else "")
        ) from exc
    return None if given else password


def record_config(settings: Settings) -> list[str]:
    """Record the effective configuration when it differs from the last one recorded, so every
    configuration change (file or environment) is in the access log. Returns the changed keys."""
    current = settings.model_dump(mode="json")
    last = (
        AccessRecord.select(AccessRecord.details)
        .where(AccessRecord.action == "config.change")
        .order_by(AccessRecord.seq.desc())
        .first()
    )
    previous = json.loads(last.details).get("config", {}) if last else {}

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    old, new = flat(previous), flat(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        with db.write():
            audit.record(
                "config.change",
                system_actor(settings),
                query={"keys": changed},
                details={"config": current, "changed": changed, "first": not previous},
            )
    return changed


def bootstrap(settings: Settings, create_admin: bool = True) -> Bootstrap:
    """Everything `waypost init` and `waypost run` do before serving. Safe to repeat."""
    db.open_database(settings)
    done = db.migrate(settings)
    with db.connection():
        ensure_identity(settings)
        record_config(settings)
        recovered = EvidenceStore(settings).recover()
        password = ensure_admin(settings) if create_admin else None
    return Bootstrap(done, recovered, password)
