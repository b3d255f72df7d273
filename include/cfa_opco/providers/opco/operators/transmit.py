"""Thin operator: send one (OPCO, SIREN) batch of a run through a ``transmit`` callable."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from ..connections import load_path


class OpcoTransmitOperator(BaseOperator):
    """Transmit the dossiers planned for one OPCO key (``batch["conn_id"]``) in a DAG run.

    ``transmit``: a callable, or its dotted path (``"cfa_opco.opco_tasks.transmit"``), called
    as ``transmit(batch=, run_key=, connector_conn_id=, dry_run=, max_workers=, context=)``
    and returning the batch summary. One rejected dossier never fails the task; a summary
    carrying ``auth_error`` (unknown or expired key) fails it without retry, with that
    message (it names the OPCO, the SIREN and the expiry date).
    """

    template_fields: Sequence[str] = ("run_key",)
    ui_color = "#e8f4ea"

    def __init__(self, *, batch: dict, transmit: Callable[..., dict] | str, run_key: str = "{{ run_id }}",
                 connector_conn_id: str = "cfa_connector", dry_run: bool | str = False, max_workers: int = 8,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.transmit = transmit
        self.run_key = run_key
        self.connector_conn_id = connector_conn_id
        self.dry_run = dry_run
        self.max_workers = max_workers

    def execute(self, context) -> dict:
        fn = load_path(self.transmit) if isinstance(self.transmit, str) else self.transmit
        dry_run = self.dry_run if isinstance(self.dry_run, bool) else str(self.dry_run).lower() == "true"
        dry_run = dry_run or bool((context.get("params") or {}).get("dry_run"))
        conn_id = self.batch["conn_id"]
        self.log.info("transmitting %s dossiers to %s (SIREN %s)%s", self.batch.get("count"),
                      self.batch.get("opco"), self.batch.get("siren"), " — DRY RUN" if dry_run else "")
        summary = fn(batch=self.batch, run_key=self.run_key, connector_conn_id=self.connector_conn_id,
                     dry_run=dry_run, max_workers=self.max_workers, context=context)
        self.log.info("batch %s: %s", conn_id, {k: v for k, v in summary.items() if k != "errors"})
        for err in summary.get("errors", []):
            self.log.warning("dossier %s: %s", err["numero_interne"], err["error"])
        if summary.get("auth_error"):
            raise AirflowFailException(summary["auth_error"])
        return summary
