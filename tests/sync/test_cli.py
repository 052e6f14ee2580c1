"""waypost sync ... and waypost hq ... through click, against a real headquarters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance import bundle
from appliance.cli import main
from tests.conftest import operator_env
from tests.sync.conftest import HQServer, add_reads, hq_reads, post_reads


def run(settings, *args, env=None):
    result = CliRunner().invoke(
        main,
        list(args),
        env={
            "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
            "WAYPOST_STORAGE__MIN_FREE_MB": "0",
            "WAYPOST_SYNC__HQ_URL": settings.sync.hq_url,
            "WAYPOST_CONFIG": "",
            **(env or {}),
        },
    )
    return result


def test_keygen_enroll_push_and_status(settings, db, hq_path, hq_port):
    out = run(settings, "sync", "keygen")
    assert out.exit_code == 0, out.output
    key_id = bundle.key_id(bundle.post_key(settings).public_key())
    assert key_id in out.output and "BEGIN PUBLIC KEY" in out.output and "waypost --as ADMIN hq enroll" in out.output
    admin = operator_env(settings, "capt.ruiz", "admin")  # headquarters' administrator (one data_dir here)
    enrolled = run(
        settings,
        "hq",
        "enroll",
        "--database",
        str(hq_path),
        "--post",
        settings.post.id,
        "--name",
        "Main St",
        "--public-key",
        str(bundle.public_key_file(settings)),
        env=admin,
    )
    assert enrolled.exit_code == 0 and key_id in enrolled.output, enrolled.output
    add_reads(settings, 3)
    offline = run(settings, "sync", "status", "--offline")
    assert "reads waiting: 3" in offline.output
    refused = run(settings, "sync", "push")
    assert refused.exit_code != 0 and "did not answer" in refused.output
    server = HQServer(hq_path, hq_port).start()
    try:
        pushed = run(settings, "sync", "push")
        assert pushed.exit_code == 0 and "3 read(s)" in pushed.output, pushed.output
        status = run(settings, "sync", "status")
        assert "reads waiting: 0" in status.output and "headquarters holds outbox seq up to 3" in status.output
    finally:
        server.stop()
    assert hq_reads(settings.post.id) == post_reads()
    shown = run(settings, "hq", "status", "--database", str(hq_path))
    assert shown.exit_code == 0 and "Main St" in shown.output and "3 read(s)" in shown.output
    assert "verified" in shown.output


def test_enroll_refuses_a_file_that_is_not_a_key(settings, db, tmp_path, hq_path):
    bad = tmp_path / "key.pub"
    bad.write_text("hello")
    admin = operator_env(settings, "capt.ruiz", "admin")
    out = run(
        settings, "hq", "enroll", "--database", str(hq_path), "--post", "post-1", "--public-key", str(bad), env=admin
    )
    assert out.exit_code != 0 and "not an Ed25519 public key" in out.output


@pytest.mark.parametrize(
    "mode,line", [("push", "sent 4 batch(es): 30 read(s)"), ("pull", "pulled 4 batch(es), 30 read(s)")]
)
def test_bench_sync_sends_the_whole_backlog(tmp_path, mode, line):
    result = CliRunner().invoke(
        main,
        ["bench", "sync", "-n", "30", "--batch-max-reads", "8", "--mode", mode, "--json", "--dir", str(tmp_path / "b")],
        env={"WAYPOST_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["held_at_hq"] == 30 and figures["chain_verified"]
    assert figures["post_peak_rss_mib"] > 0 and figures["hq_peak_rss_mib"] > 0 and figures["hq_database"] == "sqlite"
    assert line in figures["output"][0]


def test_hq_serve_on_a_port_in_use_says_so_before_making_anything(tmp_path):
    """The port is taken first: a port in use stops `hq serve` with one line, before headquarters'
    accounts database and access log (or its reads database) are made."""

    data = tmp_path / "hq-data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "WAYPOST_STORAGE__DATA_DIR": str(data), "WAYPOST_CONFIG": "", "WAYPOST_ADMIN_PASSWORD": ""}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "hq",
                "serve",
                "--database",
                str(tmp_path / "hq.sqlite"),
                "--port",
                str(port),
            ],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use; give `waypost hq serve` a free --port"
    )
    assert not list(data.glob("*.db")) and "password" not in proc.stdout
