"""The host dashboard (host_sim/dashboard.py) in a real headless Chromium (Debian `chromium` and
`chromium-driver`, driven by selenium; scripts/ensure-browser installs them), on both engines."""
import json
import os
import shutil
import tempfile
import urllib.request

import pytest

from host_sim.charges import Charges, Rules
from host_sim.dashboard import Dashboard
from host_sim.registry import Registry

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags that work on this kind of machine (no sandbox as root, no background connections).
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,900")


def browser_missing():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return "%s is not installed (scripts/ensure-browser installs chromium and " \
                   "chromium-driver as root)" % path
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make setup)"
    return None


@pytest.fixture
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + ("--user-data-dir=" + profile,):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def charge(n, amt=500, cpn=()):
    return {"cid": bytes([n]) * 16, "kind": "sale", "gross": amt, "amt": amt, "cur": "CNY",
            "at": 1, "off": False, "clerk": "c",
            "cpn": [{"cti": c, "cmp": "X", "disc": 0} for c in cpn]}


def fill(db):
    reg = Registry(db)
    for dev in ("T-1", "T-2", "T-3"):
        reg.register(dev, "S-1", "M-1")
    reg.set_online("T-1", True)
    reg.record_status("T-1", {"queue": 2, "queue_amt": 900, "oldest_at": 1, "drops": 0,
                              "uptime": 5, "declined_unseen": 1})
    reg.record_status("T-3", {"queue": 7, "queue_amt": 4100, "oldest_at": 1, "drops": 0,
                              "uptime": 5, "declined_unseen": 0})
    ch = Charges(reg, Rules(decline_over=10000))
    ch.process("T-1", charge(1, amt=20000))  # declined over_limit
    ch.process("T-1", charge(2, cpn=[b"\x07"]))
    ch.process("T-2", charge(3, cpn=[b"\x07"]))  # the coupon's second use: a conflict
    ch.process("T-2", charge(4))
    return reg


def test_dashboard_json(host_db):
    reg = fill(host_db)
    board = Dashboard(host_db).start()
    try:
        with urllib.request.urlopen(board.url + "api/fleet", timeout=10) as r:
            facts = json.load(r)
        with urllib.request.urlopen(board.url + "nope", timeout=10) as r:
            pytest.fail("a 404 expected, got %d" % r.status)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    finally:
        board.stop()
        reg.close()
    assert facts["terminals"] == {"total": 3, "online": 1, "queued": 9}
    assert facts["charges"] == {"approved": 3, "declined": 1}
    assert facts["declines"] == {"over_limit": 1}
    assert facts["conflicts"] == 1
    assert facts["refunds_review"] is None  # no refunds service in this database
    assert [(t["device_id"], t["queue"]) for t in facts["queues"]] == [
        ("T-3", 7), ("T-1", 2), ("T-2", None)]


def test_dashboard_in_headless_chromium(host_db, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    reg = fill(host_db)
    board = Dashboard(host_db).start()
    try:
        browser.get(board.url)
        wait = WebDriverWait(browser, 15)

        def text(id_):
            return browser.find_element(By.ID, id_).text

        wait.until(lambda d: text("online") == "1 / 3")
        assert text("queued") == "9"
        assert text("declined") == "1"
        assert text("conflicts") == "1"
        assert text("approved") == "3"
        assert text("refunds") == "no refunds service"
        rows = browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
        cells = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]
        assert cells == [["T-3", "S-1", "offline", "7", "4100", "0"],
                         ["T-1", "S-1", "online", "2", "900", "1"],
                         ["T-2", "S-1", "offline", "–", "–", "–"]]
        declines = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#declines tbody tr")]
        assert declines == ["over_limit 1"]
        # The page follows the database: a terminal comes online, a refund waits for review.
        reg.set_online("T-2", True)
        reg.store.schema("CREATE TABLE IF NOT EXISTS refunds (rid BLOB PRIMARY KEY,"
                         " status TEXT NOT NULL)")
        with reg.store.transaction() as tx:
            tx.execute("INSERT INTO refunds (rid, status) VALUES (?, 'review')", (b"r1",))
            tx.execute("INSERT INTO refunds (rid, status) VALUES (?, 'approved')", (b"r2",))
        wait.until(lambda d: text("online") == "2 / 3" and text("refunds") == "1")
        browser.save_screenshot(os.path.join(tempfile.gettempdir(), "dashboard.png"))
    finally:
        board.stop()
        reg.close()
