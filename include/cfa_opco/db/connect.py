"""One way to open a PostgreSQL connection, from a DSN or an Airflow connection id.

Tasks name Airflow connections (``cfa_connector``, ``cfa_erp_main``...); the command-line
tools and tests pass DSNs. Everything below takes a plain psycopg2 connection, so the
same code runs in both worlds and COPY stays available.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import psycopg2
import psycopg2.extensions


# one place for the per-task connection cache: the OPCO provider's (it may import nothing of ours)
from cfa_opco.providers.opco.connections import airflow_connection, cached_connections  # noqa: E402,F401


def dsn_for(target: str) -> str:
    """A libpq DSN: ``target`` itself when it is one, else the Airflow connection's URI."""
    if "://" in target or "=" in target:
        return target
    conn = airflow_connection(target)
    auth = conn.login or ""
    if conn.password:
        from urllib.parse import quote

        auth += ":" + quote(conn.password, safe="")
    host = conn.host or "127.0.0.1"
    port = f":{conn.port}" if conn.port else ""
    extra = conn.extra_dejson or {}
    query = "&".join(f"{k}={v}" for k, v in extra.items() if k in {"sslmode", "options", "application_name"})
    return f"postgresql://{auth}@{host}{port}/{conn.schema or ''}" + (f"?{query}" if query else "")


def connect(target: str, application_name: str = "cfa_opco") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn_for(target), application_name=application_name)
    return conn


@contextlib.contextmanager
def connection(target: str) -> Iterator[psycopg2.extensions.connection]:
    """Connection committed on success, rolled back on error, always closed."""
    conn = connect(target)
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
