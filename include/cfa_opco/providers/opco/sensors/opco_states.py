"""OpcoDecisionSensor: waits until the OPCOs decided on every dossier of a run.

Each check is the ``check`` callable (or its dotted path, e.g.
``"cfa_opco.opco_tasks.check_decisions"``): it syncs the states of the connections holding
the run's open dossiers, then counts what is still pending. Done when
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
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from ..connections import load_path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _parse(ts: str) -> dt.datetime:
    d = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


class OpcoDecisionSensor(BaseSensorOperator):
    template_fields = ("run_id", "connector_conn_id", "deadline")
    ui_color = "#fde9c4"

    def __init__(self, *, check: Callable[..., tuple[bool, dict]] | str, run_id: str,
                 connector_conn_id: str = "cfa_connector", proof_sink: str | None = None,
                 deadline: timedelta = timedelta(hours=8), deferrable: bool = True, poke_interval: float = 30,
                 lag_seconds: float = 2, software: dict | None = None,
                 hook_factory: Callable[[str], Any] | None = None,
                 writeback: Callable[[str, list[dict]], None] | None = None, pending_report_limit: int = 200,
                 done_when_only_incomplete: bool = False, **kwargs):
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.check_fn = check
        self.proof_sink = proof_sink     # dotted path of a sink factory, built by the trigger with connector_conn_id
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

    def check(self, deadline_at: dt.datetime, event: dict | None = None) -> tuple[bool, dict]:
        fn = load_path(self.check_fn) if isinstance(self.check_fn, str) else self.check_fn
        done, summary = fn(run_id=self.run_id, connector_conn_id=self.connector_conn_id, deadline_at=deadline_at,
                           software=self.software, hook_factory=self.hook_factory, writeback=self.writeback,
                           lag_seconds=self.lag_seconds, pending_report_limit=self.pending_report_limit,
                           done_when_only_incomplete=self.done_when_only_incomplete, event=event, logger=self.log)
        self._watch = summary.pop("watch", None)
        return done, summary

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
        # the daily DAG file imports this module: the trigger would bring both hooks and
        # airflow.triggers.base (~0.1 s) into every parse, for a class needed only when deferring
        from ..triggers.opco_states import OpcoStateChangeTrigger  # lazy: DAG parse time (see above)

        remaining = self.timeout - (_now() - started).total_seconds()
        if remaining <= 0:
            self._timed_out(started)
        watch = getattr(self, "_watch", None) or {}
        conns = sorted(watch.get("conn_ids") or [])
        now = _now().isoformat()
        since = {c: (watch.get("since") or {}).get(c, now) for c in conns}
        trigger = OpcoStateChangeTrigger(conn_ids=conns, since=since, poll_interval=self.poke_interval,
                                         deadline=deadline_at.isoformat(), software=self.software,
                                         proof_sink=self.proof_sink,
                                         proof_target=self.connector_conn_id if self.proof_sink else None,
                                         run_id=self.run_id, poll_failures=getattr(self, "_poll_failures", None))
        self.defer(trigger=trigger, method_name="execute_complete",
                   kwargs={"started_at": started.isoformat(), "deadline_at": deadline_at.isoformat()},
                   timeout=timedelta(seconds=remaining))

    def _timed_out(self, started: dt.datetime):
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
        self._poll_failures = (event or {}).get("poll_failures") or None
        done, summary = self.check(deadline, event)
        if done:
            return summary
        if (_now() - started).total_seconds() >= self.timeout:
            self._timed_out(started)
        self._defer(started, deadline)
