"""A minimal chroot connection for the real-converge test (tests/deploy/test_real_converge.py).

ansible-core ships no chroot connection (it lives in community.general, which this project does not
install). This one is enough to provision a debootstrap root on the test machine as if it were a
host reached over SSH: every command runs as `chroot ROOT /bin/sh -c CMD` with a clean environment
(nothing of the controller's environment leaks in, as over SSH), files are copied in and out through
the root's own `cat`, and modules are piped (pipelining), so `become` (sudo inside the root) works
for an unprivileged become_user too. It must run as root on the controller.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: chroot
    short_description: Run tasks inside a chroot directory on the controller (Waypost tests)
    description:
        - Runs commands and copies files into a directory holding a Debian root, with chroot(8).
    author: Waypost
    options:
        remote_addr:
            description: Path of the root directory.
            default: inventory_hostname
            type: string
            vars:
                - name: inventory_hostname
                - name: ansible_host
    extends_documentation_fragment:
        - connection_pipelining
"""

import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase

# The environment every command starts with inside the root (what sshd would give root).
ROOT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "LOGNAME=root",
    "USER=root",
    "SHELL=/bin/sh",
    "DEBIAN_FRONTEND=noninteractive",
]


class Connection(ConnectionBase):
    transport = "chroot"
    has_pipelining = True
    default_user = "root"

    def _root(self) -> str:
        return self.get_option("remote_addr")

    def _connect(self):
        root = self._root()
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("the chroot connection needs root on the controller")
        if not os.path.isfile(os.path.join(root, "bin/sh")):
            raise AnsibleConnectionFailure(f"{root} is not a root filesystem (no bin/sh in it)")
        if not self._connected:
            self._connected = True
        return self

    def _popen(self, cmd: str, stdin=subprocess.PIPE) -> subprocess.Popen:
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        argv = [chroot, self._root(), "/usr/bin/env", "-i", *ROOT_ENV, "/bin/sh", "-c", cmd]
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        proc = self._popen(cmd)
        stdout, stderr = proc.communicate(to_bytes(in_data) if in_data is not None else None)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        with open(in_path, "rb") as source:
            proc = self._popen(f"cat > {shlex.quote(out_path)}", stdin=source)
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise AnsibleError(f"could not copy {in_path} to {out_path} in {self._root()}: {stderr!r}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        with open(out_path, "wb") as target:
            proc = self._popen(f"cat {shlex.quote(in_path)}", stdin=subprocess.DEVNULL)
            while chunk := proc.stdout.read(65536):
                target.write(chunk)
            stderr = proc.stderr.read()
            proc.wait()
        if proc.returncode != 0:
            raise AnsibleError(f"could not fetch {in_path} from {self._root()}: {stderr!r}")

    def close(self):
        self._connected = False
