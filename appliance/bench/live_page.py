"""`waypost bench live-page`: the live view's load time in chromium."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from appliance import config, db, hotlist, search, users
from appliance.alerts import raise_alerts
from appliance.audit import system_actor
from appliance.bench.data import fill
from appliance.bootstrap import bootstrap
from appliance.capture.demo import DEMO_HOTLIST, demo_hotlist_csv
from appliance.models import Read, User, utcnow
from appliance.service import PostService


def live_page(loads: int = 30, where: Path | None = None, capture: bool = True) -> dict:
    """Load time of the live view in Debian's chromium (Playwright, a dev dependency) with a warm
    cache: a running post (demo capture unless capture=False) with a day of reads and open alerts,
    an officer signed in with a purpose stated, then `loads` reloads timed by the browser's own
    navigation timing (start of the request to the load event)."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 (optional dependency: requirements-dev.txt)
    except ImportError as exc:
        raise RuntimeError("the live-page benchmark needs Playwright (requirements-dev.txt)") from exc
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise RuntimeError("the live-page benchmark needs Debian's chromium (apt install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    settings = config.load(
        None,
        environ={
            "WAYPOST_STORAGE__DATA_DIR": str(root),
            "WAYPOST_STORAGE__MIN_FREE_MB": "0",
            "WAYPOST_WEB__PORT": str(port),
            "WAYPOST_CAPTURE__TYPE": "demo" if capture else "folder",
            "WAYPOST_RECOGNIZER__THREADS": "1",
        },
    )
    bootstrap(settings, create_admin=False)
    password = "bench officer passphrase"
    with db.connection():
        fill(settings, 5000)
        demo_hotlist_csv(root / "hot.csv")
        hotlist.import_csv(settings, root / "hot.csv", "DEMO", system_actor(settings))
        plates = [e["plate"] for e in DEMO_HOTLIST[:5]]
        with db.write():
            for read in Read.select().order_by(Read.id.desc()).limit(5):  # five reads become hotlisted
                search.unindex_read(read.id, read.plate, read.alternatives)
                read.plate = plates.pop()
                read.save()
                search.index_read(read.id, read.plate, read.alternatives)
                raise_alerts(settings, read)
        if not User.select().where(User.username == "bench.officer").exists():
            users.add(
                system_actor(settings),
                username="bench.officer",
                display_name="Bench Officer",
                organization=settings.post.agency,
                role="officer",
                password=password,
                must_change_password=False,
            )
            users.set_training(
                system_actor(settings),
                "bench.officer",
                completed_on=utcnow().date() - dt.timedelta(days=1),
                expires_on=utcnow().date() + dt.timedelta(days=300),
                course="bench",
            )
    service = PostService(settings, with_capture=capture).start()
    base = f"http://127.0.0.1:{port}"
    times, server = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=browser_path, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/auth/login")
            page.fill("#username", "bench.officer")
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.select_option("#purpose", "STOLEN-VEH")
            page.fill("#case_number", "26-000417")
            page.click("#state-purpose")
            page.locator("#latest-reads").wait_for()
            for _ in range(loads):
                page.reload(wait_until="load")
                nav = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.loadEventEnd - n.startTime, n.responseEnd - n.requestStart]; }"
                )
                times.append(nav[0])
                server.append(nav[1])
            rows = page.locator("#latest-reads tbody tr").count()
            browser.close()
    finally:
        service.stop()
    return {
        "benchmark": "live_page",
        "loads": loads,
        "capture_running": capture,
        "reads_listed": rows,
        "load_ms_p50": round(float(np.percentile(times, 50)), 1),
        "load_ms_p95": round(float(np.percentile(times, 95)), 1),
        "response_ms_p50": round(float(np.percentile(server, 50)), 1),
        "data_dir": str(root),
    }
