"""envd sample service under test.

GET /health checks MYSQL_URL, MONGO_URL and REDIS_URL and answers
{"mysql": "ok", "mongo": "ok", "redis": "ok"} (200), or the error per service (503).
GET / answers a short JSON greeting. Every request is appended to
$ENVD_LOG_DIR/app.log (default /var/log/envd/app) when /var/log/envd exists.
Listens on 0.0.0.0:$PORT (default 8080).
"""

import datetime
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

TIMEOUT = float(os.environ.get("CHECK_TIMEOUT", "3"))
LOG_DIR = os.environ.get("ENVD_LOG_DIR", "/var/log/envd/app")
_log_lock = threading.Lock()


def check_mysql(url: str) -> None:
    import pymysql

    u = urlparse(url)
    conn = pymysql.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=(u.path.lstrip("/") or None),
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        conn.close()


def check_mongo(url: str) -> None:
    from pymongo import MongoClient

    ms = int(TIMEOUT * 1000)
    client = MongoClient(url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
    try:
        db = client.get_default_database(default="admin")
        # A real read: with auth enforced, ping alone may pass unauthenticated.
        db.list_collection_names()
    finally:
        client.close()


def check_redis(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        if not r.ping():
            raise RuntimeError("PING did not answer PONG")
    finally:
        r.close()


CHECKS = {"mysql": ("MYSQL_URL", check_mysql), "mongo": ("MONGO_URL", check_mongo), "redis": ("REDIS_URL", check_redis)}


def health() -> tuple[int, dict]:
    result: dict[str, str] = {}

    def run(name: str, var: str, fn) -> None:
        url = os.environ.get(var)
        if not url:
            result[name] = f"{var} is not set"
            return
        try:
            fn(url)
            result[name] = "ok"
        except Exception as exc:  # noqa: BLE001 — report any failure per service
            result[name] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(n, v, f)) for n, (v, f) in CHECKS.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = {n: result.get(n, "no answer") for n in CHECKS}
    status = 200 if all(v == "ok" for v in ordered.values()) else 503
    return status, ordered


def access_log(line: str) -> None:
    print(line, flush=True)
    if not os.path.isdir("/var/log/envd"):
        return
    try:
        os.makedirs(LOG_DIR, exist_ok=True)
        with _log_lock, open(os.path.join(LOG_DIR, "app.log"), "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as exc:
        print(f"cannot write {LOG_DIR}/app.log: {exc}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "envd-sample/1"

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        # Logged before answering: a client that got the answer finds its line.
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        access_log(f"{now} {self.client_address[0]} {self.command} {self.path} {status} {json.dumps(body)}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        if self.path.split("?")[0] == "/health":
            self._send(*health())
        elif self.path.split("?")[0] == "/":
            self._send(200, {"service": os.environ.get("GIT_REPO_NAME", "sample"), "health": "/health"})
        else:
            self._send(404, {"error": f"no route for GET {self.path}"})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 — access_log does it
        pass


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"sample service listening on 0.0.0.0:{port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
