#!/usr/bin/python3
"""envd/mongo entrypoint: SecantusDB with the official mongo image's contract.

  MONGO_INITDB_ROOT_USERNAME / MONGO_INITDB_ROOT_PASSWORD  root user (role root in
      admin) created on the first start of a data directory; auth is then enforced.
  MONGO_INITDB_DATABASE   database the init files go to (default: test).
  /docker-entrypoint-initdb.d/<collection>.json   documents imported into
      <MONGO_INITDB_DATABASE>.<collection>: a JSON array or one document per line
      (MongoDB Extended JSON).  *.sh files are run (ENVD_MONGO_INIT_URL points at
      the private init server).  *.js is refused: there is no mongo shell.
  ENVD_LOG_DIR            log copy (default /var/log/envd/mongo, when /var/log/envd exists).

Arguments are secantusd-py flags (e.g. --cache-size 256M); /etc/secantus/secantusd.toml
holds the defaults (0.0.0.0:27017, /data/db, standalone). Any other command is run as is.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

INIT_DIR = "/docker-entrypoint-initdb.d"
log = logging.getLogger("envd-mongo")


def die(msg: str) -> None:
    print(f"envd-mongo: error: {msg}", flush=True)
    sys.exit(1)


def setup_logging(level: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    log_dir = os.environ.get("ENVD_LOG_DIR", "/var/log/envd/mongo")
    if os.path.isdir("/var/log/envd"):
        try:
            os.makedirs(log_dir, exist_ok=True)
            handlers.append(logging.FileHandler(os.path.join(log_dir, "mongod.log")))
        except OSError as exc:
            print(f"envd-mongo: cannot write logs to {log_dir}: {exc}", flush=True)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )


def import_json(client, db_name: str, path: str) -> None:
    from bson import json_util

    coll = os.path.basename(path)[: -len(".json")]
    text = Path(path).read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            docs = json_util.loads(text)
        else:
            docs = [json_util.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        die(f"{path}: not JSON (an array, or one document per line): {exc}")
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        die(f"{path}: expected documents (JSON objects)")
    if docs:
        client[db_name][coll].insert_many(docs)
    log.info("imported %d document(s) from %s into %s.%s", len(docs), path, db_name, coll)


def reopen(server, host: str, port: int, auth: bool, make):
    """Moves the init server to its public address with auth as asked, keeping its
    storage open (a restart costs ~2 s: the accept thread's join times out and
    WiredTiger closes and reopens). Falls back to a restart if SecantusDB's
    internals differ from the pinned version's."""
    try:
        sock, thread = server._socket, server._thread
        server._stop_event.set()
        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        sock.close()
        thread.join(timeout=2.0)
        if thread.is_alive():
            raise RuntimeError("accept thread still running")
        server.connections.close_all()
        server._socket = None
        server._thread = None
        server.host, server.port, server.require_auth = host, port, auth
        server.start()
        return server
    except (AttributeError, OSError, RuntimeError) as exc:
        log.info("restarting the server (%s)", exc)
        server.stop()
        server = make(host, port, auth)
        server.start()
        return server


def main() -> None:
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        if argv[0] not in ("secantusd-py", "mongod"):
            os.execvp(argv[0], argv)
        argv = argv[1:]

    from pymongo import MongoClient
    from secantus.cli import _overrides_from_args, build_parser
    from secantus.config import ConfigError, apply_overrides, load_config
    from secantus.server import SecantusDBServer

    args = build_parser().parse_args(argv)
    try:
        base, source = load_config(args.config)
        cfg = apply_overrides(base, _overrides_from_args(args))
    except ConfigError as exc:
        die(str(exc))
    setup_logging(cfg.log_level)
    if source is not None:
        log.info("loaded config from %s", source)

    user = os.environ.get("MONGO_INITDB_ROOT_USERNAME", "")
    pwd = os.environ.get("MONGO_INITDB_ROOT_PASSWORD", "")
    if bool(user) != bool(pwd):
        die("set both MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD, or neither")
    db_name = os.environ.get("MONGO_INITDB_DATABASE") or "test"
    files = sorted(glob.glob(os.path.join(INIT_DIR, "*")))
    for f in files:
        if f.endswith(".js"):
            die(f"{f}: *.js init files need the mongo shell, which this image does not have; use *.json or *.sh")

    def make(host: str, port: int, auth: bool) -> SecantusDBServer:
        return SecantusDBServer(
            host=host,
            port=port,
            storage_path=cfg.storage_path,
            require_auth=auth,
            noop_heartbeat_seconds=cfg.noop_heartbeat_seconds,
            replica_set_name=None if cfg.standalone else "secantus",
            enable_test_commands=bool(cfg.enable_test_commands),
            oplog_retention_seconds=cfg.oplog_retention_seconds,
            oplog_max_entries=cfg.oplog_max_entries,
            oplog_archive_dir=cfg.oplog_archive_dir,
            cache_size=cfg.cache_size,
            session_max=cfg.session_max,
            sync_on_commit=cfg.sync_on_commit,
            tls_cert_file=cfg.tls_cert_file,
            tls_key_file=cfg.tls_key_file,
            tls_ca_file=cfg.tls_ca_file,
            tls_require_client_cert=cfg.tls_require_client_cert,
        )

    os.makedirs(cfg.storage_path, exist_ok=True)
    marker = Path(cfg.storage_path) / ".envd-initialised"
    if not marker.exists() and (user or files):
        # First start: a private server on loopback, unauthenticated, for the init.
        server = make("127.0.0.1", 0, False)
        server.start()
        host, port = server.address
        url = f"mongodb://{host}:{port}/?directConnection=true"
        with MongoClient(url, serverSelectionTimeoutMS=10000) as client:
            if user:
                client.admin.command(
                    "createUser",
                    user,
                    pwd=pwd,
                    roles=[{"role": "root", "db": "admin"}],
                    mechanisms=["SCRAM-SHA-256", "SCRAM-SHA-1"],
                )
                log.info("created root user %r in admin", user)
            for f in files:
                if f.endswith(".json"):
                    import_json(client, db_name, f)
                elif f.endswith(".sh"):
                    log.info("running %s", f)
                    env = dict(os.environ, ENVD_MONGO_INIT_URL=url)
                    cmd = [f] if os.access(f, os.X_OK) else ["bash", f]
                    if subprocess.run(cmd, env=env).returncode != 0:
                        die(f"{f} failed")
                else:
                    log.info("ignoring %s", f)
        marker.touch()
        server = reopen(server, cfg.host, cfg.port, bool(cfg.auth or user), make)
    else:
        server = make(cfg.host, cfg.port, bool(cfg.auth or user))
        server.start()

    def on_signal(signum, frame) -> None:
        log.info("signal %d: stopping", signum)
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("ready: auth %s", "enforced" if server.require_auth else "off")
    server.wait()


if __name__ == "__main__":
    main()
