"""The package as provisioning installs it: a wheel (`pip install .`, not editable) in a fresh
virtualenv, run from outside the repository. It must start `waypost run` with the demo street and
store reads: everything the running post needs (the plate renderer, the models, the templates) is
in the package, and nothing it imports is left out of it (recognizer.training is).

The fresh venv takes its third-party packages from this one (a .pth line: the dependencies are
pinned and already installed here), so the test builds and installs only Waypost itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv with Waypost's wheel installed in it."""
    where = tmp_path_factory.mktemp("install")
    wheels = where / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        cwd=where,
    )
    (wheel,) = wheels.glob("waypost-*.whl")
    env_dir = where / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies, from this venv. A plain path line: this venv's own .pth files (among them
    # the editable install of the repository) are not processed for it.
    (site / "waypost-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        cwd=where,
    )
    return python


def test_the_wheel_holds_the_runtime_and_not_the_training_code(installed, tmp_path):
    probe = (
        "import importlib.util, json, appliance, recognizer, web; from pathlib import Path;"
        "print(json.dumps({'appliance': appliance.__file__,"
        " 'training': importlib.util.find_spec('recognizer.training') is not None,"
        " 'models': sorted(p.name for p in (Path(recognizer.__file__).parent / 'models').glob('*.tflite')),"
        " 'templates': (Path(web.__file__).parent / 'templates' / 'base.html').exists()}))"
    )
    out = subprocess.run([str(installed), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    found = json.loads(out.stdout)
    assert Path(found["appliance"]).is_relative_to(installed.parent.parent), found["appliance"]
    assert not found["training"]
    assert {"detector.tflite", "ocr.tflite"} <= set(found["models"])
    assert found["templates"]


def test_the_wheel_holds_the_list_of_refused_recipients(installed, tmp_path):
    """Sharing checks every recipient against appliance/recipients_refused.toml: package data, so a
    post installed from the wheel must have it (without it no request could be recorded)."""
    probe = (
        "import json; from appliance import sharing;"
        "found = sharing.screen('ca-other-public', 'CA', 'ICE San Francisco Field Office', 'CA0380000');"
        "print(json.dumps({'sharing': sharing.__file__, 'entries': len(sharing.refused_list().entries),"
        " 'entry': found.entry if found else None}))"
    )
    out = subprocess.run([str(installed), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert Path(found["sharing"]).is_relative_to(installed.parent.parent), found["sharing"]
    assert found["entries"] > 20 and found["entry"] == "U.S. Immigration and Customs Enforcement (ICE), DHS"


@pytest.mark.slow
def test_waypost_run_with_the_demo_street_stores_reads(installed, tmp_path):
    data = tmp_path / "data"
    env = {
        **os.environ,
        "WAYPOST_CONFIG": "",
        "WAYPOST_STORAGE__DATA_DIR": str(data),
        "WAYPOST_WEB__PORT": str(_free_port()),
        "WAYPOST_CAPTURE__TYPE": "demo",
        "WAYPOST_RECOGNIZER__THREADS": "1",
        "WAYPOST_ADMIN_PASSWORD": "",
    }
    proc = subprocess.Popen(
        [str(installed), "-m", "appliance", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reads = 0
    try:
        deadline = time.monotonic() + 180
        while reads < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(1)
            if (data / "waypost.db").exists():
                con = sqlite3.connect(data / "waypost.db", timeout=10)
                try:
                    reads = con.execute("SELECT count(*) FROM read").fetchone()[0]
                except sqlite3.OperationalError:  # not migrated yet
                    reads = 0
                finally:
                    con.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert reads >= 2, out
    assert proc.returncode == 0, out
    assert "capture not started" not in out, out


def test_the_wheel_carries_the_common_password_list(installed, tmp_path):
    """appliance/users.py refuses the passwords in appliance/common_passwords.txt: an installed post
    must have the file, or every password change would fail."""
    probe = (
        "import json; from appliance import users;"
        "print(json.dumps({'file': str(users.COMMON_PASSWORDS_FILE), 'count': len(users.common_passwords()),"
        " 'refused': users.password_problem('Password1234', 12)}))"
    )
    out = subprocess.run([str(installed), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    found = json.loads(out.stdout)
    assert Path(found["file"]).is_relative_to(installed.parent.parent), found["file"]
    assert found["count"] > 1000
    assert "one of the most common passwords" in found["refused"]
