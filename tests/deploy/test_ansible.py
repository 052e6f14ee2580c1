"""deploy/ansible: lint, syntax check, and a real converge of the roles into scratch roots.

The converge (converge.yml) runs the common, post and hq roles on this machine with the local
connection, every path under a temporary directory and the system-only tasks (apt, users,
service starts, sshd -t, nft, hostname) off. It is run twice; the second run must change nothing.
It needs no root, so it is the converge a developer's machine runs, and the only one of headquarters
on SQLite (with its backup and restore); test_real_converge.py applies the playbooks to real Debian
roots with the system tasks on.
"""

from __future__ import annotations

import getpass
import grp
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOKS = ("site.yml", "post.yml", "hq.yml")

pytestmark = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="ansible-core is not installed in this venv (requirements-dev.txt)"
)


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE_DIR / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_LOCAL_TEMP"] = env["ANSIBLE_REMOTE_TEMP"] = str(Path(extra.pop("tmp", "/tmp")) / ".ansible-tmp")
    env.update(extra)
    return env


def _run(args, env, cwd=ANSIBLE_DIR, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_ansible_lint_production_profile(tmp_path):
    result = _run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"], _env(tmp=tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s), 0 warning(s)" in result.stdout + result.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook, tmp_path):
    result = _run(
        [str(BIN / "ansible-playbook"), "-i", "inventories/example/hosts.yml", "--syntax-check", playbook],
        _env(tmp=tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("read_days,ok", [(60, True), (14, False)])
def test_post_refuses_a_journal_that_outlives_the_reads(tmp_path, read_days, ok):
    """The post's log lines name plates: the journal's MaxRetentionSec (common role's default) may
    not exceed the reads' retention period, or the post role stops before changing anything."""
    play = tmp_path / "check.yml"
    play.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars_files": [str(ANSIBLE_DIR / "roles/common/defaults/main.yml")],
                    "vars": {"post_retention": {"read_days": read_days}},
                    # the task file alone: including the role would pull in its dependency, the common role,
                    # and apply it to this machine
                    "tasks": [
                        {"ansible.builtin.include_tasks": str(ANSIBLE_DIR / "roles/post/tasks/check.yml")},
                        {"ansible.builtin.debug": {"msg": "checked"}},
                    ],
                }
            ]
        )
    )
    result = _run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter=" + sys.executable,
            str(play),
        ],
        _env(tmp=tmp_path),
    )
    if ok:
        assert result.returncode == 0 and "msg: checked" in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode != 0 and "journal would keep plates past the retention period" in result.stdout, (
            result.stdout + result.stderr
        )


def _recap(output: str) -> dict:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("converge")
    version = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    env = _env(
        tmp=scratch,
        WAYPOST_TEST_ROOT=str(scratch),
        WAYPOST_TEST_USER=getpass.getuser(),
        WAYPOST_TEST_GROUP=grp.getgrgid(os.getgid()).gr_name,
        WAYPOST_TEST_REPO=str(ROOT),
        WAYPOST_TEST_VERSION=version,
    )
    for name in list(env):
        if name.startswith("WAYPOST_") and "__" in name:  # config overrides would leak into `config check`
            del env[name]
    cmd = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
        "-e",
        "ansible_become=false",
        str(ROOT / "tests" / "deploy" / "converge.yml"),
    ]
    runs = []
    for _ in range(2):
        result = _run(cmd, env)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        runs.append(_recap(result.stdout))
    key = (scratch / "post/var/lib/waypost/post_key").read_bytes()
    return {"root": scratch, "runs": runs, "version": version, "key": key}


def test_converge_twice_second_run_changes_nothing(converged):
    first, second = converged["runs"]
    assert first["changed"] > 0 and first["failed"] == 0
    assert second["changed"] == 0, second


def test_post_units_installed_enabled_and_hardened(converged):
    etc = converged["root"] / "post/etc/systemd/system"
    for unit in (
        "waypost.service",
        "waypost-retention.service",
        "waypost-retention.timer",
        "waypost-sync-push.service",
        "waypost-sync-push.timer",
    ):
        assert (etc / unit).is_file(), unit
    assert os.readlink(etc / "multi-user.target.wants/waypost.service") == "/etc/systemd/system/waypost.service"
    assert (etc / "timers.target.wants/waypost-retention.timer").is_symlink()
    assert (etc / "timers.target.wants/waypost-sync-push.timer").is_symlink()
    service = (etc / "waypost.service").read_text()
    for line in (
        "Restart=on-failure",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "PrivateTmp=true",
        "ProtectHome=true",
        f"ReadWritePaths={converged['root']}/post/var/lib/waypost",
    ):
        assert line in service
    assert "Type=notify" in service and "WatchdogSec=60" in service  # appliance/service.py feeds it
    assert "retention run" in (etc / "waypost-retention.service").read_text()
    assert "sync push" in (etc / "waypost-sync-push.service").read_text()


def test_post_app_installed_config_validates_and_key_kept(converged):
    root = converged["root"] / "post"
    waypost = root / "opt/waypost/venv/bin/waypost"
    config = root / "etc/waypost/waypost.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    check = subprocess.run([str(waypost), "config", "check", str(config)], capture_output=True, text=True, env=env)
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stdout + check.stderr
    text = config.read_text()
    assert 'id = "post-test"' in text and "trusted_proxy = true" in text and "secure_cookies = true" in text
    assert 'host = "127.0.0.1"' in text
    assert (root / f"opt/waypost/venv/.waypost-installed-{converged['version']}").exists()
    # venv made with --system-site-packages (picamera2 from apt on the Pi)
    assert "include-system-site-packages = true" in (root / "opt/waypost/venv/pyvenv.cfg").read_text()
    keygen = subprocess.run(
        [str(waypost), "--config", str(config), "sync", "keygen"], capture_output=True, text=True, env=env
    )
    assert keygen.returncode == 0, keygen.stderr
    assert (root / "var/lib/waypost/post_key").read_bytes() == converged["key"]  # made once, kept


def test_firewall_ssh_and_tls(converged):
    post_rules = (converged["root"] / "post/etc/nftables.conf").read_text()
    hq_rules = (converged["root"] / "hq/etc/nftables.conf").read_text()
    assert "policy drop;" in post_rules and "tcp dport 22 accept" in post_rules
    assert "tcp dport { 443 } accept" in post_rules
    assert "tcp dport { 443, 8443 } accept" in hq_rules
    nft = Path("/usr/sbin/nft")
    if nft.exists():
        assert subprocess.run([str(nft), "-c", "-f", str(converged["root"] / "post/etc/nftables.conf")]).returncode == 0
    sshd = (converged["root"] / "post/etc/ssh/sshd_config.d/10-waypost.conf").read_text()
    assert "PermitRootLogin no" in sshd and "PasswordAuthentication no" in sshd
    cert = converged["root"] / "post/etc/waypost/tls/server.crt"
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"], capture_output=True, text=True)
    assert "post-test" in out.stdout
    assert oct((converged["root"] / "post/etc/waypost/tls/server.key").stat().st_mode & 0o777) == "0o600"
    site = (converged["root"] / "post/etc/nginx/sites-available/waypost-post.conf").read_text()
    assert "listen 443 ssl http2;" in site and "proxy_pass http://127.0.0.1:8080;" in site


def _hq_env(root: Path) -> dict:
    """hq.env as systemd reads it (KEY=value, the value possibly in single quotes)."""
    values = {}
    for line in (root / "etc/waypost/hq.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value[1:-1] if value.startswith("'") else value
    return values


def test_hq_config_sign_in_behind_tls_and_first_admin_env(converged):
    root = converged["root"] / "hq"
    config = root / "etc/waypost/waypost.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    check = subprocess.run(
        [str(root / "opt/waypost/venv/bin/waypost"), "config", "check", str(config)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stdout + check.stderr
    text = config.read_text()
    for line in (
        "secure_cookies = true",
        "trusted_proxy = true",
        'name = "Test headquarters"',
        'agency = "Test Police Department"',
        'db_file = "waypost.db"',
    ):
        assert line in text, line
    hq_env = root / "etc/waypost/hq.env"
    assert oct(hq_env.stat().st_mode & 0o777) == "0o600"
    assert _hq_env(root)["WAYPOST_ADMIN_PASSWORD"] == "a passphrase for headquarters"
    assert "WAYPOST_ADMIN_PASSWORD" not in (root / "etc/systemd/system/waypost-hq-backup.service").read_text()


def _backups(output: str) -> list[Path]:
    return [Path(line.split("backup: ", 1)[1]) for line in output.splitlines() if line.startswith("backup: ")]


def test_hq_enrolled_post_and_backup_restore(converged):
    """Both databases are backed up as a pair and restored: the posts' reads (hq.sqlite) and the
    accounts and access log (waypost.db, made here by `waypost init`, the bootstrap `hq serve` runs,
    with the first administrator's password from hq.env)."""
    root = converged["root"] / "hq"
    database = root / "var/lib/waypost/hq.sqlite"
    accounts = root / "var/lib/waypost/waypost.db"
    config = str(root / "etc/waypost/waypost.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    waypost = str(root / "opt/waypost/venv/bin/waypost")
    python = str(root / "opt/waypost/venv/bin/python")
    backup_dir = root / "var/backups/waypost"
    password = _hq_env(root)["WAYPOST_ADMIN_PASSWORD"]

    def run(*args, check=True, **extra):
        result = subprocess.run(
            [str(a) for a in args], check=False, capture_output=True, text=True, env={**env, **extra}
        )
        assert not check or result.returncode == 0, result.stdout + result.stderr
        return result

    def accounts_state():
        """(access records, hash of the last one, whether admin signs in with the vault password)"""
        out = run(
            python,
            "-c",
            "import sys; from appliance import config, db, users\n"
            "s = config.load(sys.argv[1]); db.open_database(s)\n"
            "with db.connection():\n"
            "    n, last = db.open_database(s).execute_sql("
            "'SELECT count(*), (SELECT hash FROM access_record ORDER BY seq DESC LIMIT 1) FROM access_record')"
            ".fetchone()\n"
            "    print(n, last, users.check_password(users.get('admin'), sys.argv[2]))",
            config,
            password,
        )
        return out.stdout.split()

    init = run(waypost, "--config", config, "init", WAYPOST_ADMIN_PASSWORD=password)
    assert "password:" not in init.stdout  # given, so not printed
    before = accounts_state()
    assert int(before[0]) > 0 and before[2] == "True", before
    status = run(waypost, "hq", "status", "--json", "--database", database)
    assert "post-test" in json.dumps(json.loads(status.stdout))

    made = _backups(run(root / "usr/local/sbin/waypost-hq-backup").stdout)
    assert [p.name.split("-", 1)[0] for p in made] == ["hq", "accounts"], made
    assert made[0].name.split("-", 1)[1].split(".")[0] == made[1].name.split("-", 1)[1].split(".")[0]
    assert all(p.is_file() for p in made)
    for path in (database, accounts):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    restore = run(root / "usr/local/sbin/waypost-hq-restore", made[0])
    assert f"restored {made[1]}" in restore.stdout
    assert "access log verified" in restore.stdout  # the restore checks the chain itself
    status = run(waypost, "hq", "status", "--json", "--database", database)
    assert "post-test" in status.stdout
    assert accounts_state() == before
    verify = run(waypost, "--config", config, "audit", "verify")
    assert verify.returncode == 0
    # the restored accounts database serves the commands: they ask, as on a post, for a named account
    listing = run(waypost, "--config", config, "user", "list", check=False)
    assert listing.returncode == 2 and "waypost --as USERNAME user list" in listing.stderr, listing.stderr

    # A pair missing its accounts file restores nothing unless --reads-only says so.
    made[1].unlink()
    refused = run(root / "usr/local/sbin/waypost-hq-restore", made[0], check=False)
    assert refused.returncode == 2 and "incomplete" in refused.stderr, refused.stderr
    assert accounts_state() == before

    # Retention: the newest hq_backup_keep (2) of each kind stay.
    newer = []
    for _ in range(3):
        time.sleep(1.1)  # one stamp per second
        newer += _backups(run(root / "usr/local/sbin/waypost-hq-backup").stdout)
    assert sorted(p.name for p in backup_dir.iterdir()) == sorted(p.name for p in newer[2:])

    # A pair whose access log was altered is restored (it is what there is) but the restore says
    # so and fails, instead of leaving the check to the technician.

    kept = newer[2:]
    pair_accounts = next(p for p in kept if p.name.startswith("accounts-"))
    pair_reads = next(
        p
        for p in kept
        if p.name.startswith("hq-")
        and p.name.split("-", 1)[1].split(".")[0] == pair_accounts.name.split("-", 1)[1].split(".")[0]
    )
    con = sqlite3.connect(pair_accounts)
    con.execute("UPDATE access_record SET username = 'someone.else' WHERE seq = 1")
    con.commit()
    con.close()
    altered = run(root / "usr/local/sbin/waypost-hq-restore", pair_reads, check=False)
    assert altered.returncode == 1, altered.stdout + altered.stderr
    assert "access log BROKEN" in altered.stdout + altered.stderr and "does NOT verify" in altered.stderr
