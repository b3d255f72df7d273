"""Thin operator: send one (OPCO, SIREN) batch of a run through the ledger."""
from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator


class OpcoTransmitOperator(BaseOperator):
    """Transmit the dossiers planned for one OPCO key (``batch["conn_id"]``) in a DAG run.

    Exactly once whatever happens (see cfa_opco.transmission). One rejected dossier never
    fails the task; an unknown or expired key fails it without retry, with a message naming
    the OPCO, the SIREN and the expiry date, after the rest of the run went on.
    """

    template_fields: Sequence[str] = ("run_key",)
    ui_color = "#e8f4ea"

    def __init__(self, *, batch: dict, run_key: str = "{{ run_id }}", connector_conn_id: str = "cfa_connector",
                 dry_run: bool | str = False, max_workers: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.run_key = run_key
        self.connector_conn_id = connector_conn_id
        self.dry_run = dry_run
        self.max_workers = max_workers

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from cfa_opco.pipeline import config
        from cfa_opco.sources import load_sources
        from cfa_opco.transmission import transmit_batch

        dry_run = self.dry_run if isinstance(self.dry_run, bool) else str(self.dry_run).lower() == "true"
        dry_run = dry_run or bool(context["params"].get("dry_run"))
        conn_id = self.batch["conn_id"]
        self.log.info("transmitting %s dossiers to %s (SIREN %s)%s", self.batch.get("count"),
                      self.batch.get("opco"), self.batch.get("siren"), " — DRY RUN" if dry_run else "")
        summary = transmit_batch(self.run_key, self.connector_conn_id, conn_id,
                                 sources=load_sources(config.sources_file()), software=config.software(),
                                 dry_run=dry_run, max_workers=self.max_workers,
                                 key_warning_days=int(config.variable("cfa_opco_key_expiry_warning_days", 30)))
        self.log.info("batch %s: %s", conn_id, {k: v for k, v in summary.items() if k != "errors"})
        for err in summary.get("errors", []):
            self.log.warning("dossier %s: %s", err["numero_interne"], err["error"])
        if summary.get("auth_error"):
            raise AirflowFailException(summary["auth_error"])
        return summary
