"""A connector database after a real small run, for the "Dossiers OPCO" view's tests: the
demo ERPs (seed 42, 2,000 dossiers) extracted, checked by the quality gate, planned with the
committed connections (one Atlas SIRET key), sent to the shared sandbox, the OPCOs' states
read by the follow-up, and the keys checked. Built once per test session (the view only
reads it), in its own ``test_ui_dossiers_connector`` database."""
from __future__ import annotations

import pytest

RUN = "manual__ui_dossiers"
_BUILT: dict = {}


def ui_connector(sbx, sources, tmp_path_factory) -> dict:
    """{"dsn", "run_id", "planned", "sent", "keys"} of the session's UI run (built on first use)."""
    if _BUILT:
        return _BUILT
    from cfa_opco.connector import migrate
    from cfa_opco.extraction import extract
    from cfa_opco.followup import key_warnings, sync_states
    from cfa_opco.outbox import plan, transmit_batch
    from cfa_opco.quality.gate import run_quality_gate
    from tests import transmission_env
    from tests.conftest import make_database
    from tests.helpers import SOFTWARE

    dsn = make_database("test_ui_dossiers_connector")
    migrate(dsn)
    with pytest.MonkeyPatch.context() as mp:
        sbx.reset()
        sbx.clear_faults()
        sbx.set_profile(None, "strict")
        env = transmission_env.opco_connection_env(sbx.port, extra_overrides={"rate_limit_per_second": 0})
        transmission_env.apply(mp, env)
        extract(RUN, sources, dsn)
        run_quality_gate(RUN, dsn, reports_dir=tmp_path_factory.mktemp("ui_reports"))
        planned = plan(RUN, dsn)
        sent = 0
        for batches in planned["batches"].values():
            for b in batches:
                r = transmit_batch(RUN, dsn, b["conn_id"], max_workers=4, retry_base=0.01, software=SOFTWARE)
                sent += r["sent"]
        sync_states(dsn, lag_seconds=0, software=SOFTWARE)
        sync_states(dsn, lag_seconds=0, software=SOFTWARE)    # instant sandbox: decisions on the second read
        warnings = key_warnings(dsn, 30, software=SOFTWARE)
        sbx.reset()
    _BUILT.update(dsn=dsn, run_id=RUN, planned=planned, sent=sent, key_warnings=warnings)
    return _BUILT
