# The host dashboard: one static page (host_sim/static/dashboard.html) and one JSON endpoint
# (/api/fleet) served by http.server on 127.0.0.1 from the host database (its own connection,
# read only): terminals online, queue depth per terminal (their last status), declines,
# coupon conflicts, refunds waiting for review, drops. `python -m host_sim serve --http-port P`.
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from host_sim.store import open_store

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGE = "dashboard.html"
TERMINAL_ROWS = 2000  # the page lists at most this many terminals, the busiest queues first


def fleet_facts(store):
    """The dashboard's numbers, read in one transaction."""
    with store.read() as tx:
        devices = tx.execute(
            "SELECT device_id, store_id, online, last_status, last_seen FROM devices"
            " ORDER BY device_id").fetchall()
        charges = dict(tx.execute(
            "SELECT status, COUNT(*) FROM charges GROUP BY status").fetchall())
        codes = tx.execute("SELECT code, COUNT(*) FROM charges WHERE status='declined'"
                           " GROUP BY code ORDER BY code").fetchall()
        conflicts = tx.execute("SELECT COUNT(*) FROM redemptions WHERE conflict=1"
                               ).fetchone()[0]
        drops = tx.execute("SELECT reason, SUM(count) FROM drops GROUP BY reason"
                           " ORDER BY reason").fetchall()
        refunds = _refunds_in_review(tx)
    terminals = []
    for dev, store_id, online, status, seen in devices:
        st = json.loads(status) if status else {}
        terminals.append({"device_id": dev, "store_id": store_id, "online": bool(online),
                          "queue": st.get("queue"), "queue_amt": st.get("queue_amt"),
                          "declined_unseen": st.get("declined_unseen"), "last_seen": seen})
    terminals.sort(key=lambda t: (-(t["queue"] or 0), t["device_id"]))
    return {
        "terminals": {"total": len(devices), "online": sum(1 for d in devices if d[2]),
                      "queued": sum(t["queue"] or 0 for t in terminals)},
        "charges": {"approved": charges.get("approved", 0),
                    "declined": charges.get("declined", 0)},
        "declines": {code or "?": int(n) for code, n in codes},
        "conflicts": conflicts,
        "refunds_review": refunds,
        "drops": {reason: int(n) for reason, n in drops},
        "queues": terminals[:TERMINAL_ROWS],
    }


def _refunds_in_review(tx):
    """Refunds waiting for review (SPEC 8.3: status `review`), or None when no refunds
    service has made its table in this database."""
    try:
        with tx.savepoint():
            return tx.execute("SELECT COUNT(*) FROM refunds WHERE status='review'"
                              ).fetchone()[0]
    except Exception:  # noqa: BLE001 - no refunds table (or another shape): not shown
        return None


class Dashboard:
    def __init__(self, db, port=0, host="127.0.0.1", log=None):
        self.db = db
        self.log = log or (lambda line: None)
        self._store = open_store(db)
        self._lock = threading.Lock()
        board = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                board._get(self)

            def log_message(self, fmt, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d/" % (host, self.port)
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.server.serve_forever, name="dashboard",
                                        daemon=True)
        self._thread.start()
        self.log("dashboard on %s" % self.url)
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._store.close()

    def _get(self, req):
        path = req.path.split("?", 1)[0]
        if path in ("/", "/" + PAGE):
            with open(os.path.join(STATIC, PAGE), "rb") as f:
                self._send(req, 200, "text/html; charset=utf-8", f.read())
        elif path == "/api/fleet":
            try:
                with self._lock:
                    facts = fleet_facts(self._store)
            except Exception as e:  # noqa: BLE001 - the page shows it; the host goes on
                self._send(req, 503, "application/json",
                           json.dumps({"error": str(e)}).encode())
                return
            self._send(req, 200, "application/json", json.dumps(facts).encode())
        else:
            self._send(req, 404, "text/plain", b"not found\n")

    def _send(self, req, code, ctype, body):
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)
