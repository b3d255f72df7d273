"""The outbox's tests: the shared sandbox with idempotency off (a resent numeroInterne is
created a second time, so only the client's ledger can keep creations at one), and a run
extracted and checked by the quality gate."""
from __future__ import annotations

import pytest

from cfa_opco.extraction import extract
from cfa_opco.quality.gate import run_quality_gate
from tests import transmission_env
from tests.outbox.common import RUN


@pytest.fixture()
def staged(sandbox, sources, connector_dsn, monkeypatch, tmp_path):
    sandbox.patch_settings(idempotency=False)    # restored by the shared fixture's reset
    env = transmission_env.opco_connection_env(sandbox.port, extra_overrides={"rate_limit_per_second": 0})
    transmission_env.apply(monkeypatch, env)
    extract(RUN, sources, connector_dsn)
    run_quality_gate(RUN, connector_dsn, reports_dir=tmp_path / "reports")
    return {"sandbox": sandbox, "sources": sources, "connector": connector_dsn}
