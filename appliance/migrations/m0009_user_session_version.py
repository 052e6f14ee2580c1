"""A per-account session version. The session lives in a signed cookie, so signing out could only
forget it in the browser that signed out: a copy taken earlier stayed valid (and alive by use).
Each session now carries the version it was signed in under; signing out, a password change or
reset and a deactivation raise the account's version, and a session with another version is
refused (the person signs in again)."""

STATEMENTS = [
    'ALTER TABLE "user" ADD COLUMN session_version INTEGER NOT NULL DEFAULT 0',
]
