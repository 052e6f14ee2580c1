"""Sync over real TLS on loopback: a TLS front (Python's ssl, certificates from a CA this test makes)
relays to headquarters' real waitress app, and to a post's; the post pushes and fetches, and
headquarters pulls, trusting that CA through sync.ca_file / sync.pull_ca_file. Without the CA, with
the wrong host name or with a wrong pin, the connection is refused with a message that names the
URL, what failed and the setting to fix, and nothing is sent."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
import threading
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.cli import main
from appliance.config import ConfigError
from appliance.models import Outbox
from sync import hq, post
from tests.conftest import make_settings
from tests.sync.conftest import _public, add_reads, hq_reads, post_reads
from tests.sync.hq.test_pull import serving_post

# --- certificates ---------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, public_key, signing_key, ca: bool, names=()):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate it signed for `localhost` only, and another CA that signed
    nothing here: their PEM files and the server certificate's SHA-256 fingerprint."""
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Waypost test CA", "Waypost test CA", ca_key.public_key(), ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("Some other CA", "Some other CA", other_key.public_key(), other_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("localhost", "Waypost test CA", key.public_key(), ca_key, ca=False, names=[x509.DNSName("localhost")])
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "other-ca.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    (root / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {
        "ca": str(root / "ca.pem"),
        "other_ca": str(root / "other-ca.pem"),
        "crt": str(root / "server.crt"),
        "key": str(root / "server.key"),
        "pin": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


# --- a TLS front, as nginx is in front of waitress on a provisioned host ------------------------------


@contextmanager
def tls_front(pki, backend_port: int):
    """Accept TLS on 127.0.0.1 (certificate for `localhost`), relay each connection's bytes to
    the backend port in plain HTTP. Yields the front's port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["crt"], pki["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(raw):
        try:
            raw.settimeout(10)
            client = context.wrap_socket(raw, server_side=True)
        except OSError:  # a client that refused our certificate: what the tests expect
            raw.close()
            return
        client.settimeout(None)
        backend = socket.create_connection(("127.0.0.1", backend_port))
        threading.Thread(target=pipe, args=(backend, client), daemon=True).start()
        pipe(client, backend)

    def accept():
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _with_sync(settings, **changes):
    return settings.model_copy(update={"sync": settings.sync.model_copy(update=changes)})


def _unsent() -> int:
    return Outbox.select().where(Outbox.sent_at.is_null()).count()


# --- the post pushes to and fetches from headquarters over HTTPS -------------------------------------


def test_post_pushes_and_fetches_over_https_trusting_sync_ca_file(settings, db, hq_server, pki):
    add_reads(settings, 3)
    with tls_front(pki, hq_server.port) as port:
        url = f"https://localhost:{port}"
        trusted = _with_sync(settings, hq_url=url, ca_file=pki["ca"])
        result = post.push(trusted)
        assert result.reads == 3 and _unsent() == 0
        assert hq_reads(settings.post.id) == post_reads()
        assert post.fetch_position(trusted).last_seq == result.position.last_seq  # a signed GET
        pinned = _with_sync(trusted, pin_sha256=":".join(pki["pin"][i : i + 2] for i in range(0, 64, 2)).upper())
        assert post.fetch_position(pinned).last_seq == result.position.last_seq


@pytest.mark.parametrize(
    "changes, host, expected",
    [
        ({}, "localhost", r"signed by an unknown CA .*sync\.ca_file is not set"),
        ({"ca_file": "OTHER"}, "localhost", r"signed by an unknown CA .*sync\.ca_file = '.*other-ca\.pem'"),
        ({"ca_file": "CA"}, "127.0.0.1", r"does not name that host \(hostname mismatch"),
        ({"ca_file": "CA", "pin_sha256": "ab" * 32}, "localhost", r"not sync\.pin_sha256 = abab.*fingerprint mismatch"),
    ],
    ids=["no-ca-file", "other-ca", "hostname", "wrong-pin"],
)
def test_post_refuses_an_untrusted_headquarters_and_says_what_to_set(
    settings, db, hq_server, pki, changes, host, expected
):
    add_reads(settings, 2)
    changes = {k: {"CA": pki["ca"], "OTHER": pki["other_ca"]}.get(v, v) for k, v in changes.items()}
    with tls_front(pki, hq_server.port) as port:
        url = f"https://{host}:{port}"
        untrusted = _with_sync(settings, hq_url=url, **changes)
        with pytest.raises(post.SyncError, match=expected) as push_error:
            post.push(untrusted)
        assert url in str(push_error.value)
        with pytest.raises(post.SyncError, match=expected):
            post.fetch_position(untrusted)
        # nothing reached headquarters, nothing is marked sent
        assert _unsent() == 2 and hq_reads(settings.post.id) == {}
        # what an administrator sees: `waypost sync status` names it (last error, and the live check)
        env = {f"WAYPOST_SYNC__{k.upper()}": str(v) for k, v in changes.items()}
        env |= {"WAYPOST_SYNC__HQ_URL": url, "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir)}
        shown = CliRunner().invoke(
            main, ["sync", "status"], env=env | {"WAYPOST_STORAGE__MIN_FREE_MB": "0", "WAYPOST_CONFIG": ""}
        )
        assert shown.exit_code == 1, shown.output
        assert "last error at" in shown.output and url in shown.output
        assert len([line for line in shown.output.splitlines() if url in line]) == 2, shown.output


def test_a_missing_ca_file_is_named(settings, db, hq_server, pki, tmp_path):
    with tls_front(pki, hq_server.port) as port:
        missing = str(tmp_path / "nowhere.pem")
        with pytest.raises(post.SyncError, match=r"cannot use sync\.ca_file = '.*nowhere\.pem' to check https://"):
            post.fetch_position(_with_sync(settings, hq_url=f"https://localhost:{port}", ca_file=missing))


def test_a_pin_must_be_a_sha256_fingerprint(tmp_path, pki):
    with_colons = ":".join(pki["pin"][i : i + 2] for i in range(0, 64, 2))
    assert make_settings(tmp_path, sync__pin_sha256=with_colons).sync.pin_sha256 == with_colons
    with pytest.raises(ConfigError, match=r"sync\.pin_sha256 .*should match pattern"):
        make_settings(tmp_path, sync__pin_sha256="not-a-fingerprint")


# --- headquarters pulls from a post over HTTPS --------------------------------------------------------


def test_headquarters_pulls_over_https_trusting_sync_pull_ca_file(settings, db, hq_path, pki):
    add_reads(settings, 3)
    with serving_post(settings, hq_path) as (_on, post_port, key), tls_front(pki, post_port) as port:
        url = f"https://localhost:{port}"
        with hq.hq_database.connection_context():
            hq.enroll(settings.post.id, "Test post", _public(settings), pull_url=url)
        sync_settings = _with_sync(settings, pull_ca_file=pki["ca"]).sync

        refused = hq.pull(settings.post.id, key)  # the system's CAs: refused
        assert "signed by an unknown CA" in refused.problem and "sync.pull_ca_file is not set" in refused.problem
        assert url in refused.problem and refused.batches == 0
        wrong_pin = _with_sync(settings, pull_ca_file=pki["ca"], pull_pin_sha256=["cd" * 32]).sync
        pinned_wrong = hq.pull(settings.post.id, key, trust=hq.pull_trust(wrong_pin))
        assert "fingerprint mismatch" in pinned_wrong.problem and "sync.pull_pin_sha256" in pinned_wrong.problem
        assert _unsent() == 3

        # `waypost hq pull` (what headquarters' timer runs) reads sync.pull_ca_file from its configuration
        env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_CONFIG": ""}
        pull_all = ["hq", "pull", "--all", "--database", str(hq_path)]
        out = CliRunner().invoke(main, pull_all, env=env)
        assert out.exit_code == 1 and "sync.pull_ca_file is not set" in out.output, out.output
        out = CliRunner().invoke(main, pull_all, env=env | {"WAYPOST_SYNC__PULL_CA_FILE": sync_settings.pull_ca_file})
        assert out.exit_code == 0 and ", 3 read(s)" in out.output, out.output
        assert hq_reads(settings.post.id) == post_reads()
