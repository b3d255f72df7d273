"""OpcoDecisionSensor: waits until the OPCOs decided on every dossier of a run.

Each check syncs the states of the connections holding the run's open dossiers
(:func:`cfa_opco.followup.sync_states`), then counts what is still pending. Done when
nothing is; at the run's deadline (DAG run start + ``deadline``) it returns anyway, with the
pending dossiers reported — it does not fail. Deferrable (default): between checks it
waits in the triggerer (OpcoStateChangeTrigger), woken as soon as an OPCO reports a change.
The Airflow ``timeout`` is honoured in both modes (AirflowSensorTimeout).
With ``done_when_only_incomplete``, it also returns as soon as every dossier still pending
is incomplete (waiting on the CFA's missing documents rather than on the OPCO).
"""
from __future__ import annotations

import datetime as dt
from datetime import timedelta
from typing import Any, Callable

from airflow.sdk import BaseSensorOperator, PokeReturnValue


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _parse(ts: str) -> dt.datetime:
    d = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


class OpcoDecisionSensor(BaseSensorOperator):
    template_fields = ("run_id", "connector_conn_id", "deadline")
    ui_color = "#fde9c4"

    def __init__(self, *, run_id: str, connector_conn_id: str = "cfa_connector",
                 deadline: timedelta = timedelta(hours=8), deferrable: bool = True, poke_interval: float = 30,
                 lag_seconds: float = 2, software: dict | None = None,
                 hook_factory: Callable[[str], Any] | None = None,
                 writeback: Callable[[str, list[dict]], None] | None = None, pending_report_limit: int = 200,
                 done_when_only_incomplete: bool = False, **kwargs):
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.run_id = run_id
        self.connector_conn_id = connector_conn_id
        self.deadline = deadline   # a timedelta, or seconds (a templated string is rendered first)
        self.deferrable = deferrable
        self.lag_seconds = lag_seconds
        self.software = software
        self.hook_factory = hook_factory
        self.writeback = writeback
        self.pending_report_limit = pending_report_limit
        self.done_when_only_incomplete = done_when_only_incomplete
        self._deadline_at: dt.datetime | None = None

    # ---- one check -------------------------------------------------------------------
    def _run_deadline(self, context) -> dt.datetime:
        if self._deadline_at is None:
            dag_run = context.get("dag_run") if context else None
            start = getattr(dag_run, "start_date", None) or _now()
            if start.tzinfo is None:
                start = start.replace(tzinfo=dt.timezone.utc)
            deadline = self.deadline
            if not isinstance(deadline, timedelta):
                deadline = timedelta(seconds=float(deadline))
            self._deadline_at = start + deadline
        return self._deadline_at

    def _hook_factory(self):
        if self.hook_factory is not None:
            return self.hook_factory
        from cfa_opco.providers.opco.hooks.opco import OpcoHook
        from cfa_opco.providers.opco.proofs import ProofRecorder

        self._recorder = ProofRecorder(self.connector_conn_id)
        return lambda cid: OpcoHook(cid, software=self.software, proof_sink=self._recorder, run_id=self.run_id)

    def check(self, deadline_at: dt.datetime) -> tuple[bool, dict]:
        from cfa_opco import followup

        conns = followup.open_connections(self.connector_conn_id, run_id=self.run_id)
        sync: dict = {"requests": 0, "changes": 0, "errors": {}}
        self._recorder = None
        if conns:
            try:
                sync = followup.sync_states(self.connector_conn_id, sorted(conns), hook_factory=self._hook_factory(),
                                            lag_seconds=self.lag_seconds, writeback=self.writeback, run_id=self.run_id)
            finally:
                if self._recorder is not None:
                    self._recorder.close()
        for cid, err in sync.get("errors", {}).items():
            self.log.warning("suivi %s : %s", cid, err)
        summary = followup.run_summary(self.connector_conn_id, self.run_id)
        summary.update(run_id=self.run_id, deadline=deadline_at.isoformat(),
                       sync={"requests": sync.get("requests", 0), "changes": sync.get("changes", 0),
                             "errors": sync.get("errors", {})})
        if summary["pending"] == 0:
            summary["status"] = "complete"
            self.log.info("OPCO decisions complete for run %s: %s", self.run_id, summary)
            return True, summary
        if self.done_when_only_incomplete and summary["pending"] == summary["incomplete"]:
            # what is left waits on the CFA (missing documents), not on the OPCO: nothing
            # more will happen within this run; the follow-up DAG keeps watching them
            summary["status"] = "waiting_for_documents"
            self.log.warning("run %s: %d dossier(s) incomplete at the OPCO (documents missing), see the "
                             "anomalies in the summary; the follow-up DAG keeps watching them",
                             self.run_id, summary["incomplete"])
            return True, summary
        if _now() >= deadline_at:
            pending = followup.pending_for_run(self.connector_conn_id, self.run_id)
            summary["status"] = "deadline"
            summary["pending_dossiers"] = [
                {"source_id": p["source_id"], "numero_interne": p["numero_interne"], "opco_code": p["opco_code"],
                 "etat": p["etat"], "incomplete": bool(p["anomalies"])} for p in pending[:self.pending_report_limit]]
            self.log.warning("deadline of run %s reached with %d dossier(s) still awaiting an OPCO decision "
                             "(%d incomplete)", self.run_id, summary["pending"], summary["incomplete"])
            return True, summary
        self.log.info("run %s: %d dossier(s) awaiting a decision (%d incomplete)", self.run_id, summary["pending"],
                      summary["incomplete"])
        return False, summary

    # ---- poke mode -------------------------------------------------------------------
    def poke(self, context) -> PokeReturnValue:
        done, summary = self.check(self._run_deadline(context))
        return PokeReturnValue(is_done=done, xcom_value=summary)

    # ---- deferrable mode -------------------------------------------------------------
    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        started = _now()
        deadline_at = self._run_deadline(context)
        done, summary = self.check(deadline_at)
        if done:
            return summary
        self._defer(started, deadline_at)

    def _defer(self, started: dt.datetime, deadline_at: dt.datetime) -> None:
        from cfa_opco import followup
        from cfa_opco.providers.opco.triggers.opco_states import OpcoStateChangeTrigger

        remaining = self.timeout - (_now() - started).total_seconds()
        if remaining <= 0:
            self._timed_out(started)
        conns = sorted(followup.open_connections(self.connector_conn_id, run_id=self.run_id))
        marks = followup.watermarks(self.connector_conn_id, conns)
        now = _now().isoformat()
        since = {c: (marks[c].isoformat() if c in marks else now) for c in conns}
        trigger = OpcoStateChangeTrigger(conn_ids=conns, since=since, poll_interval=self.poke_interval,
                                         deadline=deadline_at.isoformat(), software=self.software)
        self.defer(trigger=trigger, method_name="execute_complete",
                   kwargs={"started_at": started.isoformat(), "deadline_at": deadline_at.isoformat()},
                   timeout=timedelta(seconds=remaining))

    def _timed_out(self, started: dt.datetime):
        from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

        message = (f"Sensor has timed out; run duration of {(_now() - started).total_seconds():.0f} seconds "
                   f"exceeds the specified timeout of {self.timeout}.")
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def execute_complete(self, context, event: dict | None = None, started_at: str | None = None,
                         deadline_at: str | None = None) -> Any:
        started = _parse(started_at) if started_at else _now()
        deadline = _parse(deadline_at) if deadline_at else self._run_deadline(context)
        self._deadline_at = deadline
        if event and event.get("status") == "error":
            self.log.warning("trigger: %s", event.get("message"))
        done, summary = self.check(deadline)
        if done:
            return summary
        if (_now() - started).total_seconds() >= self.timeout:
            self._timed_out(started)
        self._defer(started, deadline)
