"""Shared fixtures: a real PostgreSQL (the embedded one by default, or any server named by
CFA_PG_HOST/CFA_PG_PORT with CFA_PG_EXTERNAL=1, e.g. this machine's PostgreSQL 15), the
seeded demo ERPs and fresh connector databases. Test databases are prefixed ``test_`` so
the demo's databases are never touched."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CFA_DB_PREFIX", "test_")
os.environ.setdefault("CFA_VAR_DIR", str(PROJECT / "var" / "test"))


def _test_port() -> str:
    """The test server's port: its own server's when it is already running, else 55433 when
    free, else any free port (another checkout's tests may hold 55433)."""
    import socket

    pid_file = Path(os.environ["CFA_VAR_DIR"]) / "pgdata" / "postmaster.pid"
    if pid_file.exists():
        lines = pid_file.read_text().splitlines()
        try:
            os.kill(int(lines[0]), 0)
            return lines[3].strip()
        except (OSError, ValueError, IndexError):
            pass
    for port in (55433, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return str(sock.getsockname()[1])
            except OSError:
                continue
    raise RuntimeError("no free port for the test PostgreSQL")


if "CFA_PG_PORT" not in os.environ:   # a server of its own: the demo's is never touched
    os.environ["CFA_PG_PORT"] = _test_port()

from cfa_opco import settings  # noqa: E402
from cfa_opco.stack import airflow_env  # noqa: E402

# Airflow, wherever a test imports it, uses a test home and the test metadata database
airflow_env.apply_env(settings.VAR_DIR / "airflow")

SEED, SEED_DOSSIERS = 42, 2000


def _admin_conn():
    from cfa_opco.stack.embedded_pg import admin_connection

    return admin_connection()


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL server: started (embedded) unless CFA_PG_EXTERNAL=1."""
    started = False
    if os.environ.get("CFA_PG_EXTERNAL") != "1":
        from cfa_opco.stack import embedded_pg

        started = not embedded_pg.is_running()
        embedded_pg.start()
    conn = _admin_conn()
    conn.close()
    yield settings.PG_HOST, settings.PG_PORT
    if started:   # leave nothing running that the tests started
        import sys

        if "airflow.settings" in sys.modules:   # close Airflow's sessions first: its exit hook
            sys.modules["airflow.settings"].dispose_orm()   # would roll back on a stopped server
        embedded_pg.stop()


def make_database(name: str) -> str:
    """Drop and create database ``name``; return its DSN."""
    from cfa_opco.stack.embedded_pg import recreate_database

    return recreate_database(name)


@pytest.fixture(scope="session")
def database_factory(pg_server):
    return make_database


@pytest.fixture(scope="session")
def seeded_erp(pg_server, tmp_path_factory):
    """Both demo ERPs seeded once per session (seed 42, 2,000 dossiers); returns
    {"erp_main": dsn, "erp_est": dsn, "files_root": Path}."""
    from cfa_opco.erp.generator import seed

    dsns = {"erp_main": make_database("test_erp_main"), "erp_est": make_database("test_erp_est")}
    files_root = tmp_path_factory.mktemp("erp_files")
    seed(SEED, SEED_DOSSIERS, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=files_root)
    return {**dsns, "files_root": files_root}


@pytest.fixture()
def connector_dsn(pg_server):
    """A fresh, migrated connector database for one test."""
    from cfa_opco.connector import migrate

    dsn = make_database(f"test_connector_{uuid.uuid4().hex[:8]}")
    migrate(dsn)
    yield dsn
    conn = _admin_conn()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def sources(seeded_erp):
    """The project's config/sources.yaml with the seeded test ERPs as targets."""
    import dataclasses

    from cfa_opco.sources import load_sources

    loaded = load_sources(targets={"erp_main": seeded_erp["erp_main"], "erp_est": seeded_erp["erp_est"]})
    return [dataclasses.replace(s, files_root=seeded_erp["files_root"] / s.id) for s in loaded]


@pytest.fixture(scope="session")
def airflow_db(pg_server):
    """A migrated Airflow metadata database for the DAG tests, with the project's pools."""
    from cfa_opco import settings
    from cfa_opco.stack import airflow_env, airflow_settings

    make_database(settings.DATABASES["airflow"])
    airflow_env.run_airflow(["db", "migrate"], quiet=True)
    cfg = airflow_settings.load(PROJECT / "airflow_settings.yaml")
    airflow_settings.apply_to_metadata_db(airflow_settings.AirflowSettings(pools=cfg.pools))


# ---- the OPCO sandbox: one real server for the tests that need its default settings ----
# (instant instruction, no rate limit). Tests that need another configuration (persistence,
# idempotency off, delays, a config file) start their own with run_sandbox(...).
@pytest.fixture(scope="session")
def sbx():
    from cfa_opco.sandbox.testing import run_sandbox

    with run_sandbox(instant=True, rate_limit=0) as server:
        yield server


@pytest.fixture
def sandbox(sbx):
    """The shared sandbox, reset (data, faults, profiles, settings) for this test, and again
    after it: the tests that use ``sbx`` directly (tests/sandbox) find it as started."""
    def clean():
        sbx.reset()
        sbx.clear_faults()
        sbx.set_profile(None, "strict")
    clean()
    yield sbx
    clean()


@pytest.fixture
def opco_conn(sandbox, monkeypatch):
    """opco_conn("akto", siren=..., key=..., **extra) -> conn_id, an AIRFLOW_CONN_* variable
    pointing at the shared sandbox (AKTO's OAuth2 client filled in)."""
    from tests.helpers import SIREN, opco_conn_env

    def make(opco: str, siren: str = SIREN, key: str | None = None, **extra) -> str:
        conn_id, value = opco_conn_env(sandbox, opco, siren, key, **extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id
    return make
