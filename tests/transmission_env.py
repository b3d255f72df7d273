"""Test plumbing shared by the transmission and end-to-end tests: OPCO connections (as
Airflow environment variables) that point at a running sandbox, built from the committed
airflow_settings.yaml so the tests use the same ids, keys and extras as the demo."""
from __future__ import annotations

import json

from cfa_opco import settings
from cfa_opco.stack import airflow_settings


def opco_connection_env(sandbox_port: int, extra_overrides: dict | None = None,
                        dsns: dict[str, str] | None = None) -> dict[str, str]:
    """AIRFLOW_CONN_* for every connection of airflow_settings.yaml: OPCO connections on
    the sandbox's port, postgres connections on ``dsns`` ({conn_id: dsn})."""
    from urllib.parse import urlparse

    cfg = airflow_settings.load(settings.PROJECT_DIR / "airflow_settings.yaml")
    airflow_settings.rewrite_sandbox_port(cfg, sandbox_port)

    def rewrite(parts: dict) -> dict:
        if parts["conn_type"] == "http" and extra_overrides:
            parts = {**parts, "extra": {**(parts.get("extra") or {}), **extra_overrides}}
        if parts["conn_type"] == "postgres" and dsns and parts["conn_id"] in dsns:
            u = urlparse(dsns[parts["conn_id"]])
            parts = {**parts, "host": u.hostname, "port": u.port, "schema": u.path.lstrip("/"),
                     "login": u.username, "password": u.password}
        return parts

    env = airflow_settings.as_env(cfg, rewrite)
    return {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}


def apply(monkeypatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def conn_ids(env: dict[str, str]) -> list[str]:
    return [k[len("AIRFLOW_CONN_"):].lower() for k in env if k.startswith("AIRFLOW_CONN_OPCO_")]


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
