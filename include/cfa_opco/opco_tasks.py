"""The project's glue behind the OPCO provider's operator, sensor and trigger.

The provider (``cfa_opco.providers.opco``) imports nothing of the project: its operator,
sensor and trigger are given what to do as callables or dotted paths, and these are they:

- :func:`transmit` — ``OpcoTransmitOperator(transmit="cfa_opco.opco_tasks.transmit")``:
  one (OPCO, SIREN) batch of a run through the exactly-once ledger.
- :func:`check_decisions` — ``OpcoDecisionSensor(check="cfa_opco.opco_tasks.check_decisions")``:
  syncs the states of the run's open dossiers, counts what is pending, tells the sensor
  whether it is done and which connections the trigger should watch.
- :data:`PROOF_SINK` — ``cfa_opco.proofs.ProofRecorder``, the sink the trigger builds in the
  triggerer from the connector's connection id (its exchanges are proofs like the hook's).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from cfa_opco import followup
from cfa_opco.outbox import transmit_batch
from cfa_opco.pipeline import config
from cfa_opco.proofs import ProofRecorder
from cfa_opco.providers.opco.hooks.opco import OpcoHook

log = logging.getLogger(__name__)

PROOF_SINK = "cfa_opco.proofs.ProofRecorder"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def transmit(*, batch: dict, run_key: str, connector_conn_id: str, dry_run: bool, max_workers: int,
             context: Any = None) -> dict:
    """Send one planned (OPCO, SIREN) batch of a run; the batch summary (``auth_error`` set
    when the key is refused: the operator fails the task with that message)."""
    return transmit_batch(run_key, connector_conn_id, batch["conn_id"], software=config.software(),
                          dry_run=dry_run, max_workers=max_workers,
                          key_warning_days=int(config.variable("cfa_opco_key_expiry_warning_days", 30)))


def check_decisions(*, run_id: str, connector_conn_id: str, deadline_at: dt.datetime, software: dict | None = None,
                    hook_factory=None, writeback=None, lag_seconds: float = 2, pending_report_limit: int = 200,
                    done_when_only_incomplete: bool = False, event: dict | None = None,
                    logger: logging.Logger | None = None) -> tuple[bool, dict]:
    """One check of the decision sensor: (done, summary). ``summary["watch"]`` lists, when not
    done, the connections to watch (``conn_ids``) and each one's window start (``since``).
    ``event``: the trigger's last event (its per-key poll failures are reported)."""
    lg = logger or log
    conns = followup.open_connections(connector_conn_id, run_id=run_id)
    sync: dict = {"requests": 0, "changes": 0, "errors": {}}
    recorder = None
    if conns:
        factory = hook_factory
        if factory is None:
            recorder = ProofRecorder(connector_conn_id)
            factory = lambda cid: OpcoHook(cid, software=software, proof_sink=recorder, run_id=run_id)  # noqa: E731
        try:
            sync = followup.sync_states(connector_conn_id, sorted(conns), hook_factory=factory,
                                        lag_seconds=lag_seconds, writeback=writeback, run_id=run_id)
        finally:
            if recorder is not None:
                recorder.close()
    for cid, err in sync.get("errors", {}).items():
        lg.warning("suivi %s : %s", cid, err)
    summary = followup.run_summary(connector_conn_id, run_id)
    summary.update(run_id=run_id, deadline=deadline_at.isoformat(),
                   sync={"requests": sync.get("requests", 0), "changes": sync.get("changes", 0),
                         "errors": sync.get("errors", {}), "poll_failures": sync.get("poll_failures", {})})
    if summary.get("suivi_impossible"):
        # keys read in vain past the limit: their dossiers are not waited for (run_summary does
        # not count them as pending), and each key is named, loud, with the reason
        health = followup.poll_health(connector_conn_id)
        summary["suivi_impossible_keys"] = {cid: {"dossiers": h["dossiers"], "failures": h["consecutive_failures"],
                                                  "last_error": (h["last_error"] or "")[:300]}
                                            for cid, h in health.items() if h["dossiers"]}
        for cid, h in summary["suivi_impossible_keys"].items():
            lg.error("suivi impossible %s : %d dossier(s), %d lectures en échec de suite — %s", cid, h["dossiers"],
                     h["failures"], h["last_error"])
    failures = (event or {}).get("poll_failures") or {}
    if failures:
        summary["poll_failures"] = failures
        for cid, f in failures.items():
            lg.warning("suivi %s : %d lecture(s) en échec, dernière raison : %s", cid, f.get("count", 0),
                       f.get("last_reason"))
    if summary["pending"] == 0:
        summary["status"] = "complete"
        lg.info("OPCO decisions complete for run %s: %s", run_id, summary)
        return True, summary
    if done_when_only_incomplete and summary["pending"] == summary["incomplete"]:
        # what is left waits on the CFA (missing documents), not on the OPCO: nothing
        # more will happen within this run; the follow-up DAG keeps watching them
        summary["status"] = "waiting_for_documents"
        lg.warning("run %s: %d dossier(s) incomplete at the OPCO (documents missing), see the anomalies in the "
                   "summary; the follow-up DAG keeps watching them", run_id, summary["incomplete"])
        return True, summary
    if _now() >= deadline_at:
        pending = followup.pending_for_run(connector_conn_id, run_id)
        summary["status"] = "deadline"
        summary["pending_dossiers"] = [
            {"source_id": p["source_id"], "numero_interne": p["numero_interne"], "opco_code": p["opco_code"],
             "etat": p["etat"], "incomplete": bool(p["anomalies"])} for p in pending[:pending_report_limit]]
        lg.warning("deadline of run %s reached with %d dossier(s) still awaiting an OPCO decision (%d incomplete)",
                   run_id, summary["pending"], summary["incomplete"])
        return True, summary
    lg.info("run %s: %d dossier(s) awaiting a decision (%d incomplete)", run_id, summary["pending"],
            summary["incomplete"])
    watch = sorted(followup.open_connections(connector_conn_id, run_id=run_id))
    marks = followup.watermarks(connector_conn_id, watch)
    now = _now().isoformat()
    summary["watch"] = {"conn_ids": watch, "since": {c: (marks[c].isoformat() if c in marks else now)
                                                     for c in watch}}
    return False, summary
