"""The real converge: post.yml and hq.yml applied to throwaway Debian bookworm roots on this machine.

Two roots (a post and headquarters) are unpacked from a debootstrap base cached between runs, reached
through a chroot connection (tests/deploy/connection_plugins/chroot.py), and provisioned by the
technicians' playbooks with `common_apply_system: true`: apt, the service user, `sshd -t`, `nft -c`,
`nginx -t`, chrony, unattended-upgrades, journald, PostgreSQL with its role, database and the enrolled
post, git, the virtualenv and pip all really run. What needs a booted system is off
(`common_init_running: false`: units are enabled but not started, the firewall is checked, never
loaded into this machine's kernel, the hostname is not set on the running kernel; a policy-rc.d stops
packages from starting daemons), and so are the Raspberry Pi camera packages (Raspberry Pi OS only).
The playbooks run twice; the second run must change nothing. Then the roots are checked from inside.

Needs root and debootstrap (.ci/run installs it); skipped otherwise. Caches (the debootstrap base,
apt's .deb files, pip's wheels) live in $WAYPOST_CONVERGE_CACHE (default /var/cache/waypost-converge);
the roots in $WAYPOST_CONVERGE_WORK (default /var/tmp/waypost-converge), removed after the run unless
WAYPOST_CONVERGE_KEEP=1. Every mount is undone in a finally, and a root is deleted only when nothing
is mounted under it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
BIN = Path(sys.executable).parent

SUITE = "bookworm"
# What a freshly imaged host already has: systemd, python3 (+ apt bindings) for Ansible, sudo for
# `become`, and sshd, since a real target is reached over SSH.
BASE_PACKAGES = ("systemd", "systemd-sysv", "python3", "python3-apt", "sudo", "openssh-server", "ca-certificates")
BASE_MAX_AGE_S = 30 * 86400
CACHE = Path(os.environ.get("WAYPOST_CONVERGE_CACHE", "/var/cache/waypost-converge"))
WORK = Path(os.environ.get("WAYPOST_CONVERGE_WORK", "/var/tmp/waypost-converge"))
GIT_IN_ROOT = "/srv/waypost.git"
WHEELS_IN_ROOT = "/var/cache/waypost-wheels"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTS = ("post-ci", "hq-ci")


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "the real converge needs root (debootstrap, chroot, mounts); CI runs it as root"
    for tool in ("debootstrap", "chroot", "mount", "umount", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install debootstrap; .ci/run installs it)"
    if not (BIN / "ansible-playbook").exists():
        return "ansible-core is not installed in this venv (requirements-dev.txt)"
    if _debian_mirror() is None:
        return "no Debian mirror found in this machine's apt sources (set WAYPOST_DEBIAN_MIRROR)"
    return None


def _debian_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (deb822 .sources or sources.list), not a fixed host."""
    if os.environ.get("WAYPOST_DEBIAN_MIRROR"):
        return os.environ["WAYPOST_DEBIAN_MIRROR"]
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if (
                "deb" in fields.get("Types", "").split()
                and "main" in fields.get("Components", "").split()
                and any(not s.endswith("-security") for s in suites)
            ):
                return fields["URIs"].split()[0]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+.*\bmain\b", line)
            if match and not match.group(2).endswith("-security"):
                return match.group(1)
    return None


WHY_NOT = _why_not()
if WHY_NOT and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI must run the real converge, but: {WHY_NOT}")
# The module fixture (base, roots, two runs: some 6 minutes on a busy 2-core machine, more on a
# first run that fills the caches) counts against its first test's timeout.
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
    pytest.mark.slow,
    pytest.mark.timeout(2400),
]


def _run(argv, timeout=900, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in argv], check=False, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def in_root(root: Path, *argv, user: str | None = None, check=True) -> subprocess.CompletedProcess:
    """Run a command inside a root with a clean environment (as over SSH), as root or as `user`."""
    runas = ["runuser", "-u", user, "--"] if user else []
    return _run(
        ["chroot", root, "/usr/bin/env", "-i", f"PATH={ROOT_PATH}", "LANG=C.UTF-8", "HOME=/root", *runas, *argv],
        check=check,
    )


# --- the cached base ----------------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return points


def _end_processes_in(root: Path) -> None:
    """Stop what still runs inside the root (a PostgreSQL left by an interrupted run, say): only
    processes whose root directory is this throwaway root, all started by this test."""
    target = os.path.realpath(root)
    for attempt_signal in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(proc / "root") == target:
                        pids.append(int(proc.name))
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, attempt_signal)
        time.sleep(2)


def _unmount_all(root: Path) -> None:
    _end_processes_in(root)
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = _mounts_under(root)
    assert not left, f"could not unmount {left}"


def _remove_root(path: Path) -> None:
    """Delete a throwaway root, refusing while anything is mounted under it (a bind of /dev or of the
    repository would be deleted through the mount otherwise)."""
    if not path.exists():
        return
    _unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def base_tarball() -> Path:
    """A debootstrap'd bookworm, as a tarball in the cache; made once (about 1.5 min), rebuilt monthly."""
    CACHE.mkdir(parents=True, exist_ok=True)
    arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
    key = hashlib.sha256(f"{SUITE} {arch} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:10]
    tarball = CACHE / f"{SUITE}-{arch}-{key}.tar"
    with open(CACHE / "base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and time.time() - tarball.stat().st_mtime < BASE_MAX_AGE_S:
            return tarball
        build = CACHE / "base-build"
        _remove_root(build)
        (CACHE / "debs").mkdir(exist_ok=True)
        try:
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    f"--cache-dir={CACHE / 'debs'}",
                    SUITE,
                    build,
                    _debian_mirror(),
                ],
                timeout=1800,
            )
            for deb in (build / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            _run(["tar", "--numeric-owner", "--xattrs", "-C", build, "-cf", f"{tarball}.tmp", "."], timeout=600)
            os.replace(f"{tarball}.tmp", tarball)
        finally:
            _remove_root(build)
        return tarball


def wheelhouse() -> Path:
    """The pinned requirements' wheels, downloaded once per requirements.txt into the cache. pip in the
    roots finds them there (find-links) and asks the index only for its listing. pip's own HTTP cache
    does not help here: this machine's egress proxy drops the Cache-Control headers, so it stores
    nothing, and every run would download some 100 MB again."""
    requirements = ROOT / "requirements.txt"
    wheels = CACHE / "wheels"
    stamp = wheels / f".requirements-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    with open(CACHE / "wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            wheels.mkdir(exist_ok=True)
            # --isolated: PyPI only, not this machine's own pip configuration (local indexes, caps)
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--isolated",
                    "--quiet",
                    "--only-binary=:all:",
                    "--cert",
                    "/etc/ssl/certs/ca-certificates.crt",
                    "-r",
                    requirements,
                    "-d",
                    wheels,
                ],
                timeout=1200,
            )
            for old in wheels.glob(".requirements-*"):
                old.unlink()
            stamp.touch()
    return wheels


# --- one throwaway root ---------------------------------------------------------------------------


def make_root(tarball: Path, path: Path) -> Path:
    path.mkdir(parents=True)
    _run(["tar", "--numeric-owner", "--xattrs", "-C", path, "-xpf", tarball], timeout=600)
    # Packages must not start daemons in a chroot (they would run on this machine).
    policy = path / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no daemon starts in a throwaway root\nexit 101\n")
    policy.chmod(0o755)
    # This machine's network setup: its resolver, and its CA certificates (egress may pass through a
    # TLS proxy with its own CA), which pip is told to use as on this machine.
    (path / "etc/resolv.conf").unlink(missing_ok=True)
    (path / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.exists():
        shutil.copyfile(host_ca, path / "usr/local/share/ca-certificates/build-host.crt")
        in_root(path, "update-ca-certificates")
    (path / "etc/pip.conf").write_text(
        f"[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nfind-links = {WHEELS_IN_ROOT}\n"
    )
    # The repository is bind-mounted; git refuses a repository owned by another user without this.
    (path / "root/.gitconfig").write_text(f"[safe]\n\tdirectory = {GIT_IN_ROOT}\n")
    return path


@contextlib.contextmanager
def mounted(root: Path, git_dir: Path, wheels: Path):
    """/proc, /dev, a private /dev/shm, apt's .deb cache, the wheelhouse and (read-only) the
    repository's git directory, always unmounted on the way out."""
    binds = [
        (CACHE / "apt-archives", "var/cache/apt/archives"),
        (wheels, WHEELS_IN_ROOT.lstrip("/")),
        (git_dir, GIT_IN_ROOT.lstrip("/")),
    ]
    try:
        (root / "proc").mkdir(exist_ok=True)
        _run(["mount", "-t", "proc", "proc", root / "proc"])
        _run(["mount", "--bind", "/dev", root / "dev"])
        _run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=512m", "tmpfs", root / "dev/shm"])
        for source, target in binds:
            source.mkdir(parents=True, exist_ok=True)
            (root / target).mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", source, root / target])
        _run(["mount", "-o", "remount,ro,bind", root / GIT_IN_ROOT.lstrip("/")])
        yield root
    finally:
        _unmount_all(root)


# --- the converge --------------------------------------------------------------------------------


def _recap(output: str) -> dict:
    recap = {}
    for host in HOSTS:
        match = re.search(
            rf"^{host}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.MULTILINE
        )
        assert match, f"no recap for {host}:\n{output[-3000:]}"
        recap[host] = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))
    return recap


def hq_certificate(scratch: Path) -> dict:
    """An agency CA and headquarters' certificate for hq-ci signed by it (the agency's certificate,
    common_tls_cert), as PEM text; the posts are given the CA (post_hq_ca_cert)."""

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("CI agency CA"))
        .issuer_name(name("CI agency CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("hq-ci"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hq-ci")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca": ca.public_bytes(pem).decode(),
        "cert": cert.public_bytes(pem).decode(),
        "key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
    }


def _inventory(roots: dict, version: str, tls: dict, fresh: bool = False) -> dict:
    """The CI inventory. `fresh`: for the check-mode run on fresh roots, where the post has no key
    and no certificate yet for headquarters' entry (a technician's vault has them by then)."""
    post_key = roots["post-ci"] / "var/lib/waypost/post_key.pub"
    post_cert = roots["post-ci"] / "etc/waypost/tls/server.crt"
    public_key = "(the post's key)" if fresh else f"{{{{ lookup('ansible.builtin.file', '{post_key}') }}}}"
    tls_cert = "" if fresh else f"{{{{ lookup('ansible.builtin.file', '{post_cert}') }}}}"
    return {
        "all": {
            "vars": {
                "ansible_connection": "chroot",
                "ansible_python_interpreter": "/usr/bin/python3",
                "common_apply_system": True,
                "common_init_running": False,
                "post_repo_url": f"file://{GIT_IN_ROOT}",
                "post_version": version,
                "hq_repo_url": f"file://{GIT_IN_ROOT}",
                "hq_version": version,
            },
            "children": {
                "posts": {
                    "hosts": {
                        "post-ci": {
                            "ansible_host": str(roots["post-ci"]),
                            "post_name": "CI post",
                            "post_camera_packages": False,  # python3-picamera2 is in Raspberry Pi OS only
                            "post_capture": {"type": "demo"},
                            "post_sync_enabled": True,
                            "post_hq_url": "https://hq-ci:8443",
                            "post_hq_ca_cert": tls["ca"],
                            "common_user_groups": ["video"],
                            "common_firewall_tcp_ports": [443],
                        }
                    }
                },
                "hq": {
                    "hosts": {
                        "hq-ci": {
                            "ansible_host": str(roots["hq-ci"]),
                            "hq_database": "postgresql",
                            "common_firewall_tcp_ports": [8443],
                            "common_tls_cert": tls["cert"],
                            "common_tls_key": tls["key"],
                            "hq_posts": [
                                {
                                    "id": "post-ci",
                                    "name": "CI post",
                                    "pull_url": "https://post-ci",
                                    "public_key": public_key,
                                    "tls_cert": tls_cert,
                                }
                            ],
                        }
                    }
                },
            },
        }
    }


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    WORK.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in WORK.glob("run-*"):  # left by a run that was killed: unmount, then delete
        pid = stale.name.removeprefix("run-")
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            _remove_root(stale)
    work = WORK / f"run-{os.getpid()}"
    _remove_root(work)
    scratch = tmp_path_factory.mktemp("real-converge")
    version = _run(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip()
    git_dir = Path(_run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=ROOT).stdout.strip())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAYPOST_", "ANSIBLE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_CONNECTION_PLUGINS=str(HERE / "connection_plugins"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(scratch / "ansible-local"),
        ANSIBLE_HOME=str(scratch / "ansible-home"),
    )
    inventory = scratch / "inventory.json"
    cmd = [BIN / "ansible-playbook", "-i", inventory, HERE / "real_converge.yml"]
    tls = hq_certificate(scratch)
    runs, durations = [], []
    check_mode = {}
    # One converge at a time on this machine: they share apt's cache (and its lock) and 2 cores.
    with open(CACHE / "converge.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            started = time.monotonic()
            tarball = base_tarball()
            wheels = wheelhouse()
            roots = {host: make_root(tarball, work / host) for host in HOSTS}
            prepared_s = time.monotonic() - started
            with contextlib.ExitStack() as stack:
                for root in roots.values():
                    stack.enter_context(mounted(root, git_dir, wheels))
                # What the technicians' README says to run first: check mode on the fresh hosts.
                inventory.write_text(json.dumps(_inventory(roots, version, tls, fresh=True), indent=1))
                began = time.monotonic()
                result = _run([*cmd, "--check", "--diff"], env=env, cwd=ANSIBLE_DIR, timeout=1500, check=False)
                (scratch / "check.log").write_text(result.stdout + result.stderr)
                check_mode = {
                    "returncode": result.returncode,
                    "output": result.stdout[-8000:] + result.stderr[-3000:],
                    "seconds": round(time.monotonic() - began, 1),
                    "untouched": not (roots["post-ci"] / "opt/waypost").exists(),
                }
                inventory.write_text(json.dumps(_inventory(roots, version, tls), indent=1))
                for attempt in range(2):
                    began = time.monotonic()
                    result = _run(cmd, env=env, cwd=ANSIBLE_DIR, timeout=1500, check=False)
                    durations.append(round(time.monotonic() - began, 1))
                    (scratch / f"run-{attempt + 1}.log").write_text(result.stdout + result.stderr)
                    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
                    runs.append(_recap(result.stdout))
                print(
                    f"\nreal converge: roots ready in {prepared_s:.1f} s, check mode {check_mode['seconds']} s, "
                    f"runs {durations} s, recaps {runs}, load {os.getloadavg()}",
                    file=sys.stderr,
                )
                yield {
                    "roots": roots,
                    "runs": runs,
                    "durations": durations,
                    "version": version,
                    "check_mode": check_mode,
                    "tls": tls,
                }
        finally:
            if os.environ.get("WAYPOST_CONVERGE_KEEP") != "1":
                _remove_root(work)


def test_converge_twice_second_run_changes_nothing(converged):
    first, second = converged["runs"]
    for host in HOSTS:
        assert first[host]["changed"] > 0 and first[host]["failed"] == 0 and first[host]["unreachable"] == 0
        assert second[host]["changed"] == 0, (host, second)


@pytest.mark.parametrize(
    "host,units",
    [
        ("post-ci", ("waypost.service", "waypost-retention.timer", "waypost-sync-push.timer")),
        ("hq-ci", ("waypost-hq.service", "waypost-hq-pull.timer", "waypost-hq-backup.timer", "postgresql.service")),
    ],
)
def test_units_installed_and_enabled(converged, host, units):
    root = converged["roots"][host]
    base = ("ssh.service", "nftables.service", "chrony.service", "unattended-upgrades.service", "nginx.service")
    for unit in base + units:
        state = in_root(root, "systemctl", "is-enabled", unit, check=False)
        assert state.stdout.strip() == "enabled", (host, unit, state.stdout, state.stderr)
    # systemd itself parses the units (offline: no running manager needed)
    ours = [f"/etc/systemd/system/{unit}" for unit in units if unit.startswith("waypost")]
    verify = in_root(root, "systemd-analyze", "verify", "--man=no", *ours, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_installed_app_runs_and_config_validates(converged, host):
    root = converged["roots"][host]
    version = in_root(root, "/opt/waypost/venv/bin/waypost", "--version", user="waypost")
    assert version.stdout.strip() == "waypost, version 0.1.0"
    check = in_root(
        root, "/opt/waypost/venv/bin/waypost", "config", "check", "/etc/waypost/waypost.toml", user="waypost"
    )
    assert "configuration OK" in check.stdout
    assert (root / f"opt/waypost/venv/.waypost-installed-{converged['version']}").exists()
    account = in_root(root, "getent", "passwd", "waypost").stdout.strip().split(":")
    assert account[5] == "/var/lib/waypost" and account[6] == "/usr/sbin/nologin"
    if host == "post-ci":
        assert "video" in in_root(root, "id", "-nG", "waypost").stdout.split()
        assert (root / "var/lib/waypost/post_key").stat().st_uid == int(account[2])


@pytest.mark.parametrize("host,ports", [("post-ci", "{ 443 }"), ("hq-ci", "{ 8443 }")])
def test_firewall_ssh_nginx_time_and_journal(converged, host, ports):
    root = converged["roots"][host]
    # the kernel checks the rules without loading them (never `nft -f` here: it is this machine's kernel)
    in_root(root, "nft", "-c", "-f", "/etc/nftables.conf")
    rules = (root / "etc/nftables.conf").read_text()
    assert "policy drop;" in rules and "tcp dport 22 accept" in rules and f"tcp dport {ports} accept" in rules
    effective = in_root(root, "sshd", "-T").stdout
    for line in ("permitrootlogin no", "passwordauthentication no", "authenticationmethods publickey"):
        assert line in effective, line
    in_root(root, "nginx", "-t")
    assert "pool 0.debian.pool.ntp.org iburst" in in_root(root, "chronyd", "-p").stdout
    journald = in_root(root, "systemd-analyze", "cat-config", "systemd/journald.conf").stdout
    assert "SystemMaxUse=64M" in journald and "MaxRetentionSec=30d" in journald
    apt_config = in_root(root, "apt-config", "dump").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in apt_config
    assert (root / "etc/hostname").read_text() == f"{host}\n"


@contextlib.contextmanager
def _postgresql(root: Path):
    """The HQ root's PostgreSQL, on its Unix socket only, for the length of a check."""
    version, name = in_root(root, "pg_lsclusters", "--no-header").stdout.split()[:2]
    in_root(root, "pg_ctlcluster", "--skip-systemctl-redirect", "-o", "-c listen_addresses=", version, name, "start")
    try:
        yield
    finally:
        in_root(root, "pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", check=False)


def test_hq_postgresql_enrolled_post_backup_and_restore(converged):
    root = converged["roots"]["hq-ci"]
    waypost = "/opt/waypost/venv/bin/waypost"
    assert (root / "var/lib/waypost/enrolled/post-ci.pub").read_text() == (
        converged["roots"]["post-ci"] / "var/lib/waypost/post_key.pub"
    ).read_text().strip() + "\n"
    config = "/etc/waypost/waypost.toml"
    # The accounts database as the first `waypost hq serve` makes it (the same bootstrap as init).
    in_root(root, waypost, "--config", config, "init", user="waypost")
    accounts = root / "var/lib/waypost/waypost.db"
    records = in_root(root, waypost, "--config", config, "audit", "head", user="waypost").stdout
    with _postgresql(root):
        status = in_root(root, waypost, "hq", "status", "--json", "--database", "postgresql:///waypost", user="waypost")
        assert "post-ci" in json.dumps(json.loads(status.stdout))
        backup = in_root(root, "/usr/local/sbin/waypost-hq-backup", user="waypost").stdout
        made, made_accounts = [
            line.split("backup: ", 1)[1] for line in backup.splitlines() if line.startswith("backup: ")
        ]
        assert made.endswith(".dump") and made_accounts.endswith(".sqlite"), backup
        accounts.unlink()
        in_root(root, "runuser", "-u", "postgres", "--", "dropdb", "waypost")
        in_root(root, "runuser", "-u", "postgres", "--", "createdb", "--owner=waypost", "waypost")
        empty = in_root(
            root, waypost, "hq", "status", "--json", "--database", "postgresql:///waypost", user="waypost", check=False
        )
        assert "post-ci" not in empty.stdout
        restored = in_root(root, "/usr/local/sbin/waypost-hq-restore", made)
        assert "access log verified" in restored.stdout, restored.stdout  # checked by the restore itself
        status = in_root(root, waypost, "hq", "status", "--json", "--database", "postgresql:///waypost", user="waypost")
        assert "post-ci" in status.stdout
    # Back, owned by the service account, its access log intact up to the same record.
    assert accounts.stat().st_uid == int(in_root(root, "id", "-u", "waypost").stdout)
    in_root(root, waypost, "--config", config, "audit", "verify", user="waypost")
    assert in_root(root, waypost, "--config", config, "audit", "head", user="waypost").stdout == records


def test_check_mode_passes_on_fresh_hosts_and_changes_nothing(converged):
    """`ansible-playbook --check --diff` on the fresh roots, before anything was applied (the
    technicians' README says to run it first)."""
    check = converged["check_mode"]
    assert check["returncode"] == 0, check["output"]
    for host in HOSTS:
        assert re.search(rf"^{host}\s*:.*failed=0", check["output"], re.MULTILINE), check["output"]
    assert check["untouched"], "check mode installed the application"


def test_sync_trust_distributed(converged):
    """The post trusts the CA that signed headquarters' certificate (sync.ca_file), headquarters the
    post's self-signed certificate (sync.pull_ca_file); openssl checks each chain and host name."""
    post, hq_root = converged["roots"]["post-ci"], converged["roots"]["hq-ci"]
    assert (post / "etc/waypost/hq-ca.pem").read_text().strip() == converged["tls"]["ca"].strip()
    assert 'ca_file = "/etc/waypost/hq-ca.pem"' in (post / "etc/waypost/waypost.toml").read_text()
    assert 'pull_ca_file = "/etc/waypost/posts-ca.pem"' in (hq_root / "etc/waypost/waypost.toml").read_text()
    post_cert = (post / "etc/waypost/tls/server.crt").read_text()
    assert (hq_root / "etc/waypost/posts-ca.pem").read_text().strip() == post_cert.strip()
    # the service account reads them (the tls directory itself is root's alone)
    in_root(post, "cat", "/etc/waypost/hq-ca.pem", user="waypost")
    in_root(hq_root, "cat", "/etc/waypost/posts-ca.pem", user="waypost")
    (post / "tmp/hq.crt").write_text((hq_root / "etc/waypost/tls/server.crt").read_text())
    ok = in_root(
        post, "openssl", "verify", "-CAfile", "/etc/waypost/hq-ca.pem", "-verify_hostname", "hq-ci", "/tmp/hq.crt"
    )
    assert "OK" in ok.stdout
    (hq_root / "tmp/post.crt").write_text(post_cert)
    ok = in_root(
        hq_root,
        "openssl",
        "verify",
        "-CAfile",
        "/etc/waypost/posts-ca.pem",
        "-verify_hostname",
        "post-ci",
        "/tmp/post.crt",
    )
    assert "OK" in ok.stdout


def test_post_gpio_group_and_lamp_code_imports(converged):
    root = converged["roots"]["post-ci"]
    assert in_root(root, "getent", "group", "gpio").stdout.startswith("gpio:")
    assert {"video", "gpio"} <= set(in_root(root, "id", "-nG", "waypost").stdout.split())
    assert 'GROUP="gpio"' in (root / "etc/udev/rules.d/60-waypost-gpio.rules").read_text()
    assert "SupplementaryGroups=video gpio" in (root / "etc/systemd/system/waypost.service").read_text()
    # the lamp code (appliance/alerts.py, Notifier._gpio) and the gpiozero it imports (python3-gpiozero,
    # seen through the venv's system site packages)
    imported = in_root(
        root,
        "/opt/waypost/venv/bin/python",
        "-c",
        "import appliance.alerts, gpiozero; from gpiozero import LED; print(gpiozero.__file__)",
        user="waypost",
    )
    assert imported.stdout.startswith("/usr/lib/python3/dist-packages/gpiozero/"), imported.stdout


def test_post_lgpio_imports_on_a_pi(converged):
    root = converged["roots"]["post-ci"]
    machine = in_root(root, "uname", "-m").stdout.strip()
    if machine != "aarch64":
        pytest.skip(
            f"lgpio (gpiozero's pin driver on a Pi) is Raspberry Pi OS's python3-lgpio, installed with the camera "
            f"packages on aarch64 only (PyPI has no aarch64 wheel); this root is {machine}"
        )
    in_root(root, "/opt/waypost/venv/bin/python", "-c", "import lgpio", user="waypost")


UNITS = {
    "post-ci": ("waypost.service", "waypost-retention.service", "waypost-sync-push.service"),
    "hq-ci": ("waypost-hq.service", "waypost-hq-pull.service", "waypost-hq-backup.service"),
}


@pytest.mark.parametrize("host", HOSTS)
def test_units_hardened_exposure_ok(converged, host):
    """`systemd-analyze security --offline=true` of each of our units in the root (its own systemd):
    every one "OK" or better (exposure at most 4.9 of 10)."""
    root = converged["roots"][host]
    usage = in_root(root, "systemd-analyze", "security", "--help", check=False).stdout
    if "--offline" not in usage:
        pytest.skip("this systemd-analyze has no --offline (systemd 252 or newer has it)")
    for unit in UNITS[host]:
        text = (root / "etc/systemd/system" / unit).read_text()
        for line in ("SystemCallFilter=@system-service", "ProtectProc=invisible", "RemoveIPC=yes"):
            assert line in text, (unit, line)
        report = in_root(
            root, "systemd-analyze", "security", "--offline=true", "--no-pager", f"/etc/systemd/system/{unit}"
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", report.stdout)
        assert match, report.stdout[-2000:]
        print(f"{host} {unit}: exposure {match.group(1)} {match.group(2)}", file=sys.stderr)
        assert float(match.group(1)) <= 4.9, (unit, report.stdout[-3000:])
    if host == "post-ci":
        service = (root / "etc/systemd/system/waypost.service").read_text()
        for group in ("video4linux", "media", "dma_heap", "gpiochip"):
            assert f"DeviceAllow=char-{group} rw" in service
