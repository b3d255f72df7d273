"""Fixtures of the OPCO provider tests: one real sandbox server (instant instruction, no
rate limit unless a test sets one) and Airflow connections as AIRFLOW_CONN_* variables."""
from __future__ import annotations

import json

import pytest

from cfa_opco.sandbox.testing import run_sandbox
from tests.helpers import SIREN



@pytest.fixture(scope="session")
def sbx():
    with run_sandbox(instant=True, rate_limit=0) as server:
        yield server


@pytest.fixture
def sandbox(sbx):
    """The shared sandbox, reset (data, faults, settings) for this test."""
    sbx.reset()
    sbx.clear_faults()
    yield sbx
    sbx.clear_faults()


def conn_env(sbx, opco: str, siren: str = SIREN, key: str | None = None, **extra) -> tuple[str, str]:
    conn_id = f"opco_{opco}_{siren}"
    ex = {"siren": siren, **extra}
    if opco == "akto":
        ex.setdefault("oauth_client_id", "cfa-opco-connector")
        ex.setdefault("oauth_client_secret", "demo-akto-secret")
        ex.setdefault("oauth_token_path", "/akto/oauth/token")
    value = json.dumps({"conn_type": "http", "host": sbx.api(opco), "password": key or f"demo-{opco}-{siren}",
                        "extra": ex})
    return conn_id, value


@pytest.fixture
def opco_conn(sandbox, monkeypatch):
    """opco_conn("akto", siren=..., key=..., **extra) -> conn_id (an AIRFLOW_CONN_* variable)."""
    def make(opco: str, siren: str = SIREN, key: str | None = None, **extra) -> str:
        conn_id, value = conn_env(sandbox, opco, siren, key, **extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id
    return make
