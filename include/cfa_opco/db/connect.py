"""One way to open a PostgreSQL connection, from a DSN or an Airflow connection id.

Tasks name Airflow connections (``cfa_connector``, ``cfa_erp_main``...); the command-line
tools and tests pass DSNs. Everything below takes a plain psycopg2 connection, so the
same code runs in both worlds and COPY stays available.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import psycopg2
import psycopg2.extensions


_CACHE: dict[str, object] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_USERS = 0


@contextlib.contextmanager
def cached_connections() -> Iterator[None]:
    """Within the block, Airflow connections looked up once are served from memory.

    Inside a task the Task SDK fetches connections through its supervisor, which worker
    threads cannot reach: a task looks its connections up in its main thread within this
    block, and the threads it starts there are served from the cache. Nothing outlives
    the block (a rotated key is read afresh by the next task)."""
    global _CACHE_USERS
    with _CACHE_LOCK:
        _CACHE_USERS += 1
    try:
        yield
    finally:
        with _CACHE_LOCK:
            _CACHE_USERS -= 1
            if _CACHE_USERS == 0:
                _CACHE.clear()


def airflow_connection(conn_id: str):
    """An Airflow connection (from the cache of an enclosing :func:`cached_connections`)."""
    with _CACHE_LOCK:
        if conn_id in _CACHE:
            return _CACHE[conn_id]
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:
        # outside a task (a command line): the secrets backends and the metadata database
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(conn_id)
    with _CACHE_LOCK:
        if _CACHE_USERS:
            _CACHE[conn_id] = conn
    return conn


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
