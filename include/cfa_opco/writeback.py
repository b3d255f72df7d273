"""Writing what the OPCOs answer back to the ERPs that allow it.

A source whose entry in sources.yaml has a ``writeback`` block receives, for each state
change: the ``etat`` statement (state, date, numéro DECA, OPCO's number) and, for each
refusal reason (``motifs``) and each missing or faulty document (``anomalies``), the
``retour`` statement — so the CFA sees them where it fixes data, in its own software. The
``echeance`` statement receives each échéance of a dossier's payment schedule as the OPCO
gives it (:mod:`cfa_opco.echeances`): numéro, date, amount, state. The ``facture`` statement
receives what the OPCO says of each invoice sent (:mod:`cfa_opco.facture_followup`): state,
amount actually paid, transfer reference and date, the OPCO's comment.
A write-back failure is logged and never fails the follow-up: the connector's database
stays the reference.
"""
from __future__ import annotations

import logging
from pathlib import Path

from cfa_opco.db.connect import connection, dsn_for
from cfa_opco.pipeline import config
from cfa_opco.sources import load_sources

log = logging.getLogger(__name__)


class ErpWriteback:
    """Callable ``(source_id, rows)`` for :func:`cfa_opco.followup.sync_states`."""

    def __init__(self, sources_file: str | Path | None = None, targets: dict[str, str] | None = None):
        self.sources_file = sources_file
        self.targets = targets
        self._dsns: dict[str, tuple[str, dict]] | None = None

    def prepare(self) -> None:
        """Read the sources and resolve their connections (in the task's main thread)."""
        if self._dsns is not None:
            return
        sources = load_sources(self.sources_file or config.sources_file(), targets=self.targets)
        self._dsns = {s.id: (dsn_for(s.connection), s.writeback) for s in sources if s.writeback}

    def __call__(self, source_id: str, rows: list[dict]) -> int:
        self.prepare()
        target = self._dsns.get(source_id)
        if target is None or not rows:
            return 0
        dsn, statements = target
        written = 0
        try:
            with connection(dsn) as conn, conn.cursor() as cur:
                for r in rows:
                    params = {"numero_interne": r["numero_interne"], "etat": r["etat"],
                              "date_etat": r.get("etat_at"), "numero_deca": r.get("numero_deca"),
                              "numero_externe": r.get("numero_externe")}
                    if statements.get("etat"):
                        cur.execute(statements["etat"], params)
                    if statements.get("retour"):
                        for item in list(r.get("motifs") or []) + list(r.get("anomalies") or []):
                            cur.execute(statements["retour"], {**params, "code": item.get("code"),
                                                               "message": item.get("message"),
                                                               "piece": item.get("piece")})
                    written += 1
        except Exception as exc:
            log.warning("write-back to %s failed (%d rows): %s", source_id, len(rows), exc)
            return 0
        return written

    def _each(self, source_id: str, statement: str, rows: list[dict], params, what: str) -> int:
        """Run the source's ``statement`` once per row (``params(row)``); 0 when the source has no
        such statement (a read-only ERP) or the write fails (logged, never raised)."""
        self.prepare()
        target = self._dsns.get(source_id)
        if target is None or not rows or not target[1].get(statement):
            return 0
        dsn, statements = target
        try:
            with connection(dsn) as conn, conn.cursor() as cur:
                for r in rows:
                    cur.execute(statements[statement], params(r))
        except Exception as exc:
            log.warning("write-back of %s to %s failed (%d rows): %s", what, source_id, len(rows), exc)
            return 0
        return len(rows)

    def echeances(self, source_id: str, rows: list[dict]) -> int:
        """The payment schedules read from the OPCO (one row per échéance) into the ERP, through
        the source's ``echeance`` statement."""
        return self._each(source_id, "echeance", rows, lambda r: {
            "numero_interne": r["numero_interne"], "numero": r["numero"],
            "date_echeance": r.get("date_echeance"), "date_fin": r.get("date_fin"),
            "montant": r.get("montant"), "etat": r.get("etat") or "A_FACTURER"}, "échéances")

    def factures(self, source_id: str, rows: list[dict]) -> int:
        """Invoice states read from the OPCO into the ERP, through the source's ``facture`` statement."""
        return self._each(source_id, "facture", rows, lambda r: {
            "numero_facture": r["numero_facture"], "numero_interne": r.get("numero_interne"),
            "etat": r.get("etat"), "etat_norm": r.get("etat_norm"),
            "montant_regle": r.get("montant_regle"), "date_reglement": r.get("date_reglement"),
            "reference_virement": r.get("reference_virement"), "commentaire": r.get("commentaire")},
            "invoice states")
