"""airflow_settings.yaml (Astro CLI format) for a plain local Airflow: applied to the
metadata database by ``make airflow-init``, or turned into ``AIRFLOW_CONN_*`` /
``AIRFLOW_VAR_*`` environment variables (tests, one-off runs) with hosts rewritten.

The postgres connections of the project's own databases (``cfa_erp_main``, ``cfa_erp_est``,
``cfa_connector``) always follow the configured PostgreSQL (``CFA_PG_HOST``/``CFA_PG_PORT``,
or ``CFA_<NAME>_DSN``), whatever port the committed file says: see :func:`rewrite_postgres`."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import yaml

from cfa_opco import settings
from cfa_opco.providers.opco.norm import CONN_TYPE

# OPCO connections: the provider's own type, or "http" as written before it registered one.
OPCO_CONN_TYPES = (CONN_TYPE, "http")


@dataclass
class AirflowSettings:
    connections: list[dict] = field(default_factory=list)
    pools: list[dict] = field(default_factory=list)
    variables: list[dict] = field(default_factory=list)


def load(path: Path) -> AirflowSettings:
    doc = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("airflow") or {}
    return AirflowSettings(doc.get("connections") or [], doc.get("pools") or [],
                           doc.get("variables") or [])


def connection_uri_parts(c: dict) -> dict:
    return {"conn_type": c.get("conn_type"), "host": c.get("conn_host"), "schema": c.get("conn_schema"),
            "login": c.get("conn_login"), "password": c.get("conn_password"),
            "port": c.get("conn_port"), "extra": c.get("conn_extra") or {},
            "description": c.get("description")}


def as_env(s: AirflowSettings, rewrite: Callable[[dict], dict] | None = None) -> dict[str, str]:
    """AIRFLOW_CONN_<ID> (JSON form) and AIRFLOW_VAR_<NAME> variables; ``rewrite`` may
    change a connection's parts (e.g. point it at a test database or sandbox port)."""
    env = {}
    for c in s.connections:
        parts = connection_uri_parts(c)
        if rewrite:
            parts = rewrite({"conn_id": c["conn_id"], **parts})
            parts.pop("conn_id", None)
        parts.pop("description", None)
        env["AIRFLOW_CONN_" + c["conn_id"].upper()] = json.dumps({k: v for k, v in parts.items() if v not in (None, "")})
    for v in s.variables:
        env["AIRFLOW_VAR_" + v["variable_name"].upper()] = str(v["variable_value"])
    return env


def rewrite_sandbox_port(s: AirflowSettings, port: int, rate_limit: float | None = None) -> None:
    """Point the OPCO connections that target the local sandbox at another port (and,
    optionally, pace them at another rate)."""
    for c in s.connections:
        host = c.get("conn_host") or ""
        if c.get("conn_type") in OPCO_CONN_TYPES and host.startswith("http://127.0.0.1:"):
            c["conn_host"] = re.sub(r"^http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{port}", host)
            if rate_limit is not None:
                c["conn_extra"] = {**(c.get("conn_extra") or {}), "rate_limit_per_second": rate_limit}


def project_database(c: dict) -> str | None:
    """The project database (``erp_main``, ``erp_est``, ``connector``, ``airflow``) a
    postgres connection of airflow_settings.yaml points at, by its schema (the database
    name without CFA_DB_PREFIX); None for any other connection (a real ERP added by hand)."""
    if c.get("conn_type") != "postgres":
        return None
    schema = c.get("conn_schema") or ""
    for name, db in settings.DATABASES.items():
        if schema in (db, db[len(settings.DB_PREFIX):]):
            return name
    return None


def rewrite_postgres(s: AirflowSettings, dsns: dict[str, str] | None = None) -> list[str]:
    """Point the postgres connections of the project's databases at the configured server:
    CFA_PG_HOST/CFA_PG_PORT/CFA_PG_USER/CFA_PG_PASSWORD (embedded or system PostgreSQL),
    or the database's own CFA_<NAME>_DSN, or ``dsns`` ({conn_id: dsn}) when given.
    The committed file says 127.0.0.1:55432; a moved server must move them all.
    Returns the conn_ids rewritten."""
    done = []
    for c in s.connections:
        if c.get("conn_type") != "postgres":
            continue
        if dsns and c["conn_id"] in dsns:
            target = dsns[c["conn_id"]]
        elif (name := project_database(c)) is not None:
            target = settings.dsn(name)
        else:
            continue
        u = urlparse(target)
        c["conn_host"] = u.hostname or settings.PG_HOST
        c["conn_port"] = u.port or 5432
        c["conn_schema"] = u.path.lstrip("/")
        c["conn_login"] = unquote(u.username) if u.username else c.get("conn_login")
        c["conn_password"] = unquote(u.password) if u.password else None
        done.append(c["conn_id"])
    return done


def apply_to_metadata_db(s: AirflowSettings) -> dict[str, int]:
    """Create or update connections, pools and variables in the metadata database."""
    # Importing airflow fixes its configuration (AIRFLOW_HOME, metadata database) for the
    # process: airflow_env.init imports this module, then applies the environment, then calls this.
    from airflow.models import Connection, Pool, Variable  # lazy: Airflow's config is read at import
    from airflow.utils.session import create_session  # lazy: Airflow's config is read at import

    with create_session() as session:
        for c in s.connections:
            parts = connection_uri_parts(c)
            existing = session.query(Connection).filter(Connection.conn_id == c["conn_id"]).one_or_none()
            conn = existing or Connection(conn_id=c["conn_id"])
            conn.conn_type = parts["conn_type"]
            conn.host, conn.schema, conn.login = parts["host"], parts["schema"], parts["login"]
            conn.password = parts["password"]
            conn.port = int(parts["port"]) if parts["port"] else None
            conn.extra = json.dumps(parts["extra"]) if parts["extra"] else None
            conn.description = parts["description"]
            if existing is None:
                session.add(conn)
        for p in s.pools:
            pool = session.query(Pool).filter(Pool.pool == p["pool_name"]).one_or_none()
            if pool is None:
                session.add(Pool(pool=p["pool_name"], slots=int(p.get("pool_slot", 1)),
                                 description=p.get("pool_description"), include_deferred=False))
            else:
                pool.slots, pool.description = int(p.get("pool_slot", 1)), p.get("pool_description")
    for v in s.variables:
        Variable.set(v["variable_name"], str(v["variable_value"]))
    return {"connections": len(s.connections), "pools": len(s.pools), "variables": len(s.variables)}


def sandbox_connection_env(sandbox_port: int, extra_overrides: dict | None = None,
                           dsns: dict[str, str] | None = None, settings_file: Path | None = None) -> dict[str, str]:
    """AIRFLOW_CONN_* for every connection of airflow_settings.yaml, the OPCO ones on a
    sandbox's port (with ``extra_overrides`` in their extra), the postgres ones on ``dsns``
    ({conn_id: dsn}), else on the configured PostgreSQL (:func:`rewrite_postgres`) — for
    tests, benchmarks and one-off runs without a metadata database."""
    cfg = load(settings_file or settings.PROJECT_DIR / "airflow_settings.yaml")
    rewrite_sandbox_port(cfg, sandbox_port)
    rewrite_postgres(cfg, dsns)

    def rewrite(parts: dict) -> dict:
        if parts["conn_type"] in OPCO_CONN_TYPES and extra_overrides:
            parts = {**parts, "extra": {**(parts.get("extra") or {}), **extra_overrides}}
        return parts

    return {k: v for k, v in as_env(cfg, rewrite).items() if k.startswith("AIRFLOW_CONN_")}
