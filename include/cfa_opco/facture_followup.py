"""Follow-up of the invoices sent (issue 12, point 5): what each OPCO says of them, kept in
``opco_facture`` (current state) and ``opco_facture_history`` (every change, append-only).

- OPCOs serving ``GET /v2/factures/etats``: one windowed read over [watermark, now − lag), all
  pages; the watermark (``facture_watermark``) moves only once the window was fully read. A
  paid invoice (``REGLE``) carries the amount actually paid, the transfer reference and date; a
  partial payment or a rejection keeps the OPCO's ``commentaire`` and reasons.
- The others (AFDAS, Constructys, OPCO 2i, OPCO EP, OPCO Santé): no invoice route to read. When
  the OPCO reports the dossier ``SOLDE`` (fully paid, through the dossier follow-up), its
  invoices are recorded paid (``via = dossier_solde``), amount and transfer not given by the
  API; until then they stay "sent, payment not readable by API".

Which invoices were sent comes from the one outbox ledger (``transmission``, operation
``FACTURE``, status ``SENT``): an invoice the OPCO lists that we did not send (typed in its
portal) is counted as ``unknown`` and not stored. A rejected invoice releases its échéance
(``transmission.released_at``): a corrected invoice under a new number may then leave. Changed rows are passed to ``writeback``
(:meth:`cfa_opco.writeback.ErpWriteback.factures`) after commit.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from typing import Any, Callable

from cfa_opco.db.connect import cached_connections, connect, dsn_for
from cfa_opco.followup import advance_watermark, for_each_connection
from cfa_opco.proofs import ProofRecorder
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.norm import opco_label

log = logging.getLogger(__name__)

FINAL = ("REGLE", "REJETE")
EPOCH_MARGIN = dt.timedelta(minutes=5)

# the invoices sent, one row per (connection, invoice number): the latest SENT row of the ledger
SENT_SQL = """
SELECT DISTINCT ON (t.conn_id, t.payload->>'numeroInterneFacture')
       t.conn_id, t.opco_code, t.source_id, t.payload->>'numeroInterneFacture' AS numero_facture,
       t.payload->>'numeroInterneDossier' AS numero_interne,
       (t.payload->'echeance'->>'numero')::int AS echeance_numero, t.sent_at,
       f.etat_norm
FROM transmission t
LEFT JOIN opco_facture f ON f.conn_id = t.conn_id AND f.numero_facture = t.payload->>'numeroInterneFacture'
WHERE t.operation = 'FACTURE' AND t.status = 'SENT' AND t.payload ? 'numeroInterneFacture'
  AND (%(conn_ids)s::text[] IS NULL OR t.conn_id = ANY(%(conn_ids)s))
ORDER BY t.conn_id, t.payload->>'numeroInterneFacture', t.id DESC
"""

_UPSERT = """
INSERT INTO opco_facture AS f (conn_id, numero_facture, opco_code, source_id, numero_interne, echeance_numero, etat,
    etat_norm, date_etat, montant, montant_regle, reference_virement, date_reglement, commentaire, motifs, via)
VALUES (%(conn_id)s, %(numero_facture)s, %(opco_code)s, %(source_id)s, %(numero_interne)s, %(echeance_numero)s,
        %(etat)s, %(etat_norm)s, %(date_etat)s, %(montant)s, %(montant_regle)s, %(reference_virement)s,
        %(date_reglement)s, %(commentaire)s, %(motifs)s::jsonb, %(via)s)
ON CONFLICT (conn_id, numero_facture) DO UPDATE SET
    etat = EXCLUDED.etat, etat_norm = EXCLUDED.etat_norm, date_etat = EXCLUDED.date_etat,
    montant = COALESCE(EXCLUDED.montant, f.montant), montant_regle = EXCLUDED.montant_regle,
    reference_virement = EXCLUDED.reference_virement, date_reglement = EXCLUDED.date_reglement,
    commentaire = EXCLUDED.commentaire, motifs = EXCLUDED.motifs, via = EXCLUDED.via,
    read_at = now(), changed_at = now()
WHERE (f.etat, f.montant_regle, f.reference_virement, f.commentaire, f.motifs)
      IS DISTINCT FROM (EXCLUDED.etat, EXCLUDED.montant_regle, EXCLUDED.reference_virement, EXCLUDED.commentaire,
                        EXCLUDED.motifs)
  AND (f.date_etat IS NULL OR EXCLUDED.date_etat IS NULL OR EXCLUDED.date_etat >= f.date_etat)
RETURNING f.conn_id, f.numero_facture, f.opco_code, f.source_id, f.numero_interne, f.echeance_numero, f.etat,
          f.etat_norm, f.date_etat, f.montant, f.montant_regle, f.reference_virement, f.date_reglement,
          f.commentaire, f.motifs, f.via
"""
_COLUMNS = ("conn_id", "numero_facture", "opco_code", "source_id", "numero_interne", "echeance_numero", "etat",
            "etat_norm", "date_etat", "montant", "montant_regle", "reference_virement", "date_reglement",
            "commentaire", "motifs", "via")
_HISTORY = """
INSERT INTO opco_facture_history (conn_id, numero_facture, etat, etat_norm, date_etat, montant_regle,
    reference_virement, date_reglement, commentaire, motifs, via, run_id)
VALUES (%(conn_id)s, %(numero_facture)s, %(etat)s, %(etat_norm)s, %(date_etat)s, %(montant_regle)s,
        %(reference_virement)s, %(date_reglement)s, %(commentaire)s, %(motifs)s::jsonb, %(via)s, %(run_id)s)
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def sent_invoices(connector: str, conn_ids: list[str] | None = None) -> dict[str, list[dict]]:
    """conn_id -> the invoices sent through it (with their last known state, None if none)."""
    with connect(connector, application_name="cfa_opco.facture_followup") as conn, conn.cursor() as cur:
        cur.execute(SENT_SQL, {"conn_ids": conn_ids})
        names = [d[0] for d in cur.description]
        out: dict[str, list[dict]] = {}
        for r in cur.fetchall():
            row = dict(zip(names, r))
            out.setdefault(row["conn_id"], []).append(row)
        return out


def _apply(db, rows: list[dict], run_id: str | None) -> list[dict]:
    changed = []
    with db.cursor() as cur:
        for r in rows:
            cur.execute(_UPSERT, {**r, "motifs": json.dumps(r["motifs"], ensure_ascii=False) if r.get("motifs") else None})
            got = cur.fetchone()
            if got is None:
                continue
            row = dict(zip(_COLUMNS, got))
            cur.execute(_HISTORY, {**row, "motifs": json.dumps(row["motifs"], ensure_ascii=False)
                                   if row.get("motifs") else None, "run_id": run_id})
            changed.append(row)
            if row["etat_norm"] == "REJETE":   # its échéance is free again: a new invoice may be sent for it
                cur.execute("""UPDATE transmission SET released_at = now()
                               WHERE operation = 'FACTURE' AND status = 'SENT' AND conn_id = %s
                                 AND payload ->> 'numeroInterneFacture' = %s AND released_at IS NULL""",
                            (row["conn_id"], row["numero_facture"]))
    db.commit()
    return changed


class _ConnFollowup:
    def __init__(self, connector: str, conn_id: str, hook, sent: list[dict], *, lag: dt.timedelta, page_size: int,
                 run_id: str | None):
        self.connector, self.conn_id, self.hook, self.sent = connector, conn_id, hook, sent
        self.lag, self.page_size, self.run_id = lag, page_size, run_id
        self.out: dict[str, Any] = {"conn_id": conn_id, "mode": None, "requests": 0, "seen": 0, "unknown": 0,
                                    "changed": [], "not_readable": 0}

    def run(self) -> dict:
        before = self.hook.request_count
        db = connect(self.connector, application_name="cfa_opco.facture_followup")
        try:
            if self.hook.capabilities.serves("factures_etats_v2"):
                self.out["mode"] = "factures_etats_v2"
                self._window(db)
            else:
                self.out["mode"] = "dossier_solde"
                self._solde(db)
        finally:
            db.close()
            self.out["requests"] = self.hook.request_count - before
        return self.out

    def _window(self, db) -> None:
        by_numero = {s["numero_facture"]: s for s in self.sent}
        with db.cursor() as cur:
            cur.execute("SELECT window_end FROM facture_watermark WHERE conn_id = %s", (self.conn_id,))
            row = cur.fetchone()
            if row:
                start = row[0]
            else:
                first = min((s["sent_at"] for s in self.sent if s["sent_at"]), default=None)
                start = (first - EPOCH_MARGIN) if first else _now() - dt.timedelta(days=1)
        db.commit()
        end = self.hook.server_now() - self.lag
        self.out["window"] = [start.isoformat(), end.isoformat()]
        if end <= start:
            return
        batch: list[dict] = []
        for st in self.hook.iter_facture_changes(start, end, self.page_size):
            self.out["seen"] += 1
            sent = by_numero.get(st.numero_facture)
            if sent is None:
                self.out["unknown"] += 1
                continue
            batch.append({"conn_id": self.conn_id, "numero_facture": st.numero_facture,
                          "opco_code": sent["opco_code"], "source_id": sent["source_id"],
                          "numero_interne": sent["numero_interne"], "echeance_numero": sent["echeance_numero"],
                          "etat": st.etat, "etat_norm": st.etat_norm, "date_etat": st.date_etat,
                          "montant": st.montant, "montant_regle": st.montant_regle if st.etat_norm == "REGLE" else None,
                          "reference_virement": st.reference_virement, "date_reglement": st.date_reglement,
                          "commentaire": st.commentaire, "motifs": st.motifs, "via": "factures_etats_v2"})
            if len(batch) >= self.page_size:
                self.out["changed"] += _apply(db, batch, self.run_id)
                batch = []
        self.out["changed"] += _apply(db, batch, self.run_id)
        advance_watermark(db, "facture_watermark", self.conn_id, end)

    def _solde(self, db) -> None:
        """No invoice route: a dossier the OPCO reports SOLDE has had its invoices paid."""
        open_ = [s for s in self.sent if s["etat_norm"] not in FINAL]
        if not open_:
            return
        with db.cursor() as cur:
            cur.execute("SELECT source_id, numero_interne, etat_at FROM opco_dossier WHERE conn_id = %s "
                        "AND etat = 'SOLDE' AND numero_interne = ANY(%s)",
                        (self.conn_id, sorted({s["numero_interne"] for s in open_})))
            solde = {(r[0], r[1]): r[2] for r in cur.fetchall()}
        db.commit()
        label = opco_label(self.hook.opco_code)
        rows = []
        for s in open_:
            at = solde.get((s["source_id"], s["numero_interne"]))
            if at is None:
                self.out["not_readable"] += 1
                continue
            rows.append({"conn_id": self.conn_id, "numero_facture": s["numero_facture"], "opco_code": s["opco_code"],
                         "source_id": s["source_id"], "numero_interne": s["numero_interne"],
                         "echeance_numero": s["echeance_numero"], "etat": "SOLDE", "etat_norm": "REGLE",
                         "date_etat": at.isoformat() if at else None, "montant": None, "montant_regle": None,
                         "reference_virement": None, "date_reglement": at.date() if at else None,
                         "commentaire": f"dossier soldé par l'{label} : facture réglée (montant et virement non "
                                        "communiqués par l'API)", "motifs": None, "via": "dossier_solde"})
        self.out["changed"] += _apply(db, rows, self.run_id)


def sync_factures(connector: str, conn_ids: list[str] | None = None, *, hook_factory: Callable[[str], Any] | None = None,
                  lag_seconds: float = 2, page_size: int = 1000, run_id: str | None = None,
                  writeback: Callable[[str, list[dict]], int] | None = None, max_workers: int = 4,
                  software: dict | None = None, record_proofs: bool = True) -> dict:
    """Read the state of every invoice sent (of ``conn_ids``). Returns {connections, requests,
    seen, changes, by_etat, paid, partly_paid, rejected (lists: numero_facture, dossier, OPCO,
    commentaire), not_readable (invoices of OPCOs without invoice route, not yet SOLDE), unknown,
    errors}. A connection that fails is reported in ``errors``; the others go on."""
    with cached_connections():
        connector = dsn_for(connector)
        sent = sent_invoices(connector, conn_ids)
        targets = sorted(c for c, rows in sent.items() if any(r["etat_norm"] not in FINAL for r in rows))
        recorder = None
        if hook_factory is None:
            recorder = ProofRecorder(connector) if record_proofs else None

            def hook_factory(cid: str):
                return OpcoHook(cid, software=software, proof_sink=recorder, run_id=run_id)
        result: dict[str, Any] = {"connections": len(targets), "requests": 0, "seen": 0, "changes": 0, "unknown": 0,
                                  "by_etat": Counter(), "paid": [], "partly_paid": [], "rejected": [],
                                  "unrecognised": [], "not_readable": {}, "errors": {}}
        lock = threading.Lock()
        lag = dt.timedelta(seconds=lag_seconds)

        def one(cid: str) -> None:
            hook = None
            try:
                hook = hook_factory(cid)
                out = _ConnFollowup(connector, cid, hook, sent[cid], lag=lag, page_size=page_size,
                                    run_id=run_id).run()
            except Exception as exc:   # an OPCO down, a key refused, an answer nobody can read
                text = str(exc) or type(exc).__name__
                log.warning("invoice follow-up of %s failed: %s", cid, text)
                with lock:
                    result["errors"][cid] = text[:500]
                return
            finally:
                if hook is not None and hasattr(hook, "close"):
                    hook.close()
            if writeback is not None and out["changed"]:
                by_source: dict[str, list[dict]] = {}
                for r in out["changed"]:
                    by_source.setdefault(r["source_id"], []).append(r)
                for source_id, rows in by_source.items():
                    try:
                        writeback(source_id, rows)
                    except Exception as exc:   # the connector's database stays the reference
                        log.warning("payment write-back to %s failed: %s", source_id, exc)
            with lock:
                for k in ("requests", "seen", "unknown"):
                    result[k] += out[k]
                result["changes"] += len(out["changed"])
                if out["not_readable"]:
                    result["not_readable"][cid] = out["not_readable"]
                for r in out["changed"]:
                    result["by_etat"][r["etat_norm"] or "INCONNU"] += 1
                    item = {"numero_facture": r["numero_facture"], "numero_interne": r["numero_interne"],
                            "opco": r["opco_code"], "commentaire": r["commentaire"],
                            "montant": _f(r["montant"]), "montant_regle": _f(r["montant_regle"])}
                    if r["etat_norm"] == "REJETE":
                        result["rejected"].append(item)
                    elif r["etat_norm"] == "REGLE" and r["montant_regle"] is not None and r["montant"] is not None \
                            and float(r["montant_regle"]) + 0.005 < float(r["montant"]):
                        result["partly_paid"].append(item)
                    elif r["etat_norm"] == "REGLE":
                        result["paid"].append(item)
                    elif r["etat_norm"] is None:
                        result["unrecognised"].append({**item, "etat": r["etat"]})

        try:
            for_each_connection(targets, one, max_workers, "factures")
        finally:
            if recorder is not None:
                recorder.close()
    result["by_etat"] = dict(result["by_etat"])
    log.info("invoice follow-up: %d connection(s), %d request(s), %d change(s) %s, %d partly paid, %d rejected, "
             "%d error(s)", result["connections"], result["requests"], result["changes"], result["by_etat"],
             len(result["partly_paid"]), len(result["rejected"]), len(result["errors"]))
    return result


def _f(v) -> float | None:
    return None if v is None else round(float(v), 2)


def task_summary(result: dict, limit: int = 50) -> dict:
    """What a task returns (XCom: counts and a few invoice numbers, never amounts per learner),
    and the warnings it logs: each rejection and partial payment, named."""
    for kind, words in (("rejected", "rejetée"), ("partly_paid", "réglée partiellement")):
        for r in result[kind][:limit]:
            log.warning("facture %s (dossier %s, %s) %s : %s", r["numero_facture"], r["numero_interne"],
                        opco_label(r["opco"]), words, r["commentaire"])
    for cid, error in result["errors"].items():
        log.warning("suivi des factures %s en échec : %s", cid, error)
    return {"connections": result["connections"], "requests": result["requests"], "changes": result["changes"],
            "by_etat": result["by_etat"], "paid": len(result["paid"]), "partly_paid": len(result["partly_paid"]),
            "rejected": [r["numero_facture"] for r in result["rejected"][:limit]],
            "not_readable": result["not_readable"], "errors": result["errors"]}
