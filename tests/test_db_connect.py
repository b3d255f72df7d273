"""cfa_opco.db.connect: an Airflow connection id is read by the postgres provider's PostgresHook
and opened as a psycopg2 connection (COPY and execute_values available), through the per-task
connection cache that worker threads rely on."""
from __future__ import annotations

import io
import json
import threading

import psycopg2.extensions
import pytest

from cfa_opco.db.connect import cached_connections, connection, dsn_for


def _conn_env(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "postgres", **fields}))


def _parts(dsn: str) -> dict:
    return psycopg2.extensions.parse_dsn(dsn)


def test_a_connection_id_opens_a_psycopg2_connection_with_the_extras_libpq_parameters(
        connector_dsn, monkeypatch):
    p = _parts(connector_dsn)
    _conn_env(monkeypatch, "cfa_tidy_probe", host=p.get("host", "127.0.0.1"), port=int(p["port"]),
              login=p.get("user"), schema=p["dbname"],
              extra={"options": "-c search_path=probe_schema,public", "cursor": "dictcursor"})
    with connection("cfa_tidy_probe") as conn, conn.cursor() as cur:
        assert isinstance(conn, psycopg2.extensions.connection)   # psycopg2, not psycopg 3
        cur.execute("SELECT current_database(), current_setting('search_path')")
        assert cur.fetchone() == (p["dbname"], "probe_schema,public")
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT 1 AS n UNION ALL SELECT 2) TO STDOUT", out)
        assert out.getvalue() == "1\n2\n"


def test_the_dsn_quotes_any_password_and_leaves_out_the_hooks_own_extra_keys(monkeypatch):
    secret = "p@ss:w/rd%?&= é'\\"
    _conn_env(monkeypatch, "cfa_tidy_quoted", host="db.example", port=5433, login="cfa@site",
              password=secret, schema="cfa_connector",
              extra={"sslmode": "require", "application_name": "cfa_opco", "cursor": "dictcursor",
                     "sqlalchemy_scheme": "postgresql+psycopg", "iam": False})
    assert _parts(dsn_for("cfa_tidy_quoted")) == {
        "host": "db.example", "port": "5433", "dbname": "cfa_connector", "user": "cfa@site",
        "password": secret, "sslmode": "require", "application_name": "cfa_opco"}


def test_a_connection_without_host_or_password_reaches_the_local_server(monkeypatch):
    _conn_env(monkeypatch, "cfa_tidy_local", login="postgres", password="", schema="cfa_erp_main")
    assert _parts(dsn_for("cfa_tidy_local")) == {"host": "127.0.0.1", "dbname": "cfa_erp_main",
                                                  "user": "postgres"}


def test_a_dsn_is_returned_unchanged():
    assert dsn_for("postgresql://u@h:1/db") == "postgresql://u@h:1/db"
    assert dsn_for("host=h dbname=db") == "host=h dbname=db"


def test_worker_threads_are_served_the_connection_the_main_thread_looked_up(monkeypatch):
    _conn_env(monkeypatch, "cfa_tidy_cached", host="first.example", schema="db")
    seen: list[str] = []
    with cached_connections():
        dsn_for("cfa_tidy_cached")   # the task's main thread looks it up once
        _conn_env(monkeypatch, "cfa_tidy_cached", host="second.example", schema="db")
        worker = threading.Thread(target=lambda: seen.append(dsn_for("cfa_tidy_cached")))
        worker.start()
        worker.join()
    assert _parts(seen[0])["host"] == "first.example"
    assert _parts(dsn_for("cfa_tidy_cached"))["host"] == "second.example"   # nothing outlives the block


@pytest.mark.parametrize("conn_type", ["http", "opco"])
def test_opco_connections_of_type_http_need_no_http_provider(conn_type, monkeypatch):
    """providers-http is not installed: a connection of type ``http`` written before the
    ``opco`` type existed is still read (the type is only a string to Airflow)."""
    from cfa_opco.providers.opco.connections import airflow_connection, parse_connection

    monkeypatch.setenv("AIRFLOW_CONN_OPCO_ATLAS_775672272", json.dumps(
        {"conn_type": conn_type, "host": "http://127.0.0.1:1/atlas/ApiEchangeCFA", "password": "k",
         "extra": {"siren": "775672272"}}))
    info = parse_connection(airflow_connection("opco_atlas_775672272"), "opco_atlas_775672272")
    assert (info.code, info.siren, info.base) == ("atlas", "775672272", "http://127.0.0.1:1/atlas/ApiEchangeCFA")
