"""Test plumbing shared by the transmission and end-to-end tests: the committed
airflow_settings.yaml's connections as environment variables, pointed at a running
sandbox and at the test databases (same ids, keys and extras as the demo)."""
from __future__ import annotations

from cfa_opco.stack.airflow_settings import sandbox_connection_env as opco_connection_env  # noqa: F401


def apply(monkeypatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
