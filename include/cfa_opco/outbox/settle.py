"""Settling what was left in doubt, whatever the run (the follow-up DAG's settle_in_doubt task)."""
from __future__ import annotations

import logging

from cfa_opco.db.connect import connection, dsn_for

from . import ledger
from .runner import transmit_batch

log = logging.getLogger(__name__)


def settle_in_doubt(connector: str, conn_ids: list[str] | None = None, *, software: dict | None = None,
                    deadline_seconds: float = 600.0, **kwargs) -> dict:
    """Settle every dossier left in doubt (PENDING intent), whatever the run: read back at the
    OPCO, re-sent only when provably absent. Returns {"before", "after", "per_batch":
    {"<run_id> <conn_id>": summary}, "errors": {conn_id: why}}."""
    connector = dsn_for(connector)
    with connection(connector) as conn:
        batches = ledger.in_doubt_batches(conn, conn_ids)
    out: dict = {"before": sum(n for *_, n in batches), "per_batch": {}, "errors": {}}
    for run_id, conn_id, _n in batches:
        try:
            out["per_batch"][f"{run_id} {conn_id}"] = transmit_batch(
                run_id, connector, conn_id, software=software, only_in_doubt=True,
                deadline_seconds=deadline_seconds, **kwargs)
        except Exception as exc:   # one key failing never stops the others
            log.warning("settling the dossiers in doubt of %s (%s) failed: %s", conn_id, run_id, exc)
            out["errors"][conn_id] = str(exc)[:500]
    out["after"] = in_doubt_count(connector, conn_ids)
    return out


def in_doubt_count(connector: str, conn_ids: list[str] | None = None) -> int:
    with connection(dsn_for(connector)) as conn:
        return ledger.in_doubt_count(conn, conn_ids)
