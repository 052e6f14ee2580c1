"""A headquarters (the sync API alone) that dies between storing a batch and answering for it, as
a power cut would: `python -m tests.sync.fault_hq DATABASE PORT`. Test-only: the production
server has no such hook."""

from __future__ import annotations

import os
import signal
import sys

from web.hq import create_hq_app
from web.server import WebServer


def main(database: str, port: int) -> None:
    app = create_hq_app(database, after_store=lambda: os.kill(os.getpid(), signal.SIGKILL))
    server = WebServer(app, "127.0.0.1", port).start()
    server.thread.join()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
