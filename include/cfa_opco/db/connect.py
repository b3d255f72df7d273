"""One way to open a PostgreSQL connection, from a DSN or an Airflow connection id.

Tasks name Airflow connections (``cfa_connector``, ``cfa_erp_main``...); the command-line
tools and tests pass DSNs. Everything below takes a plain psycopg2 connection, so the
same code runs in both worlds and COPY / ``execute_values`` stay available.

An Airflow connection id is resolved by the postgres provider's ``PostgresHook``: it builds
the URL (login, password, host, port, database, AWS/Azure IAM tokens when the extra asks for
them) and its rule for the extra (every key it does not reserve for itself is a libpq
parameter: ``sslmode``, ``options``, ``application_name``...) is applied here too. The hook
is not asked for the connection itself: with psycopg 3 and SQLAlchemy 2 installed (as
Airflow 3.3 brings them), ``PostgresHook.get_conn()`` returns a psycopg 3 connection and
``get_uri()`` a ``postgresql+psycopg://`` SQLAlchemy URL that libpq refuses; so the hook
builds the URL (``sqlalchemy_scheme="postgresql"``), its parts and the libpq parameters
of the extra become a key=value DSN (quoted by psycopg2's ``make_dsn``), and psycopg2 opens it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import psycopg2
import psycopg2.extensions

# one place for the per-task connection cache: the OPCO provider's (it may import nothing of ours)
from cfa_opco.providers.opco.connections import airflow_connection, cached_connections  # noqa: F401

DEFAULT_HOST = "127.0.0.1"   # a connection without a host: the local server over TCP, as before


def dsn_for(target: str) -> str:
    """A libpq DSN: ``target`` itself when it is one, else the Airflow connection's as
    PostgresHook reads it (the connection looked up through the per-task cache, since worker
    threads cannot look connections up)."""
    if "://" in target or "=" in target:
        return target
    # lazy: the provider pulls common-sql, psycopg 3 and sqlparse (~0.35 s), and this module is
    # on the daily DAG's parse chain (dags/cfa_opco_daily.py → cfa_opco.writeback → here)
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # lazy: DAG parse time, see above

    conn = airflow_connection(target)
    hook = PostgresHook(postgres_conn_id=target, connection=conn, sqlalchemy_scheme="postgresql")
    url = hook.sqlalchemy_url
    params = {"host": url.host or DEFAULT_HOST, "port": url.port, "dbname": url.database,
              "user": url.username, "password": url.password or None, **dict(url.query)}
    params.update({k: str(v) for k, v in (conn.extra_dejson or {}).items()
                   if k not in PostgresHook.ignored_extra_options and v not in (None, "")})
    return psycopg2.extensions.make_dsn(**{k: v for k, v in params.items() if v not in (None, "")})


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
