"""The outbox's tests: a sandbox of their own (idempotency off, so that only the client's
ledger keeps creations at one) and a run extracted and checked by the quality gate."""
from __future__ import annotations

import pytest

from cfa_opco.extraction import extract
from cfa_opco.sandbox.testing import run_sandbox
from tests import transmission_env
from tests.outbox.common import RUN


@pytest.fixture()
def sandbox():
    # idempotency off: the sandbox creates a second dossier for a resent numeroInterne,
    # so only the client's ledger can keep creations at one
    with run_sandbox(instant=True, rate_limit=0, overrides={"idempotency": False}) as sbx:
        yield sbx


@pytest.fixture()
def staged(sandbox, sources, connector_dsn, monkeypatch, tmp_path):
    env = transmission_env.opco_connection_env(sandbox.port, extra_overrides={"rate_limit_per_second": 0})
    transmission_env.apply(monkeypatch, env)
    extract(RUN, sources, connector_dsn)
    from cfa_opco.quality.gate import run_quality_gate

    run_quality_gate(RUN, connector_dsn, reports_dir=tmp_path / "reports")
    return {"sandbox": sandbox, "sources": sources, "connector": connector_dsn}
