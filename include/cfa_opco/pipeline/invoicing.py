"""The daily DAG's ``send_invoices`` task (issue 12, point 4): every invoice frozen for the run
ends in exactly one bucket, and those that may leave are sent through the one outbox runner.

Before anything leaves, each invoice gets a decision (``facture_plan``), in this order:

0. ``NO_LONGER_DUE``     its contract was terminated (rupture) before its échéance: the OPCO
                         cancelled that échéance (``ANNULEE`` in its schedule) or the rupture
                         sent through the connector is dated before the échéance's date — the
                         invoice must be cancelled in the ERP, not sent
1. ``TO_FIX``            the suite cfa_opco_facture reported it (rule codes, French messages)
2. ``FILTERED``          left out by the run's ``only_opco`` / ``only_site``
3. ``NOT_TRANSMISSIBLE`` its OPCO takes no invoice by API (``factures_v1`` not served), or takes
                         no contract by API (the dossier never went through the API): named
4. ``WAITING_ENGAGE``    its dossier is not (yet) ENGAGE at the OPCO (state or routing said)
5. ``SEND``              to the key (connection) that holds the dossier — on AFDAS, after the
                         échéance's certificat de réalisation (waiting for it, with why, when it
                         is refused, in doubt or cannot be built from the ERP's schedule)

then the SEND ones leave (``InvoiceFlow`` on ``BatchRunner``: intent first, read-back of a lost
answer, never two invoices for one échéance), ``dry_run`` building and checking them only.
:func:`invoice_buckets` joins the decisions with the ledger: transmitted, to fix, waiting for
ENGAGE or for a certificat, not transmissible, filtered, refused, in doubt, dry run, not
processed — they add up to the invoices frozen for the run.
"""
from __future__ import annotations

import logging
from collections import Counter

import psycopg2.extras

from cfa_opco.db.connect import airflow_connection, cached_connections, connect, dsn_for
from cfa_opco.outbox.invoice_flow import InvoiceFlow
from cfa_opco.pipeline.run_report import INVOICE_BUCKETS
from cfa_opco.outbox.runner import BatchRunner
from cfa_opco.providers.opco.capabilities import Capabilities
from cfa_opco.providers.opco.exceptions import OpcoRouteNotServed
from cfa_opco.providers.opco.norm import opco_label

log = logging.getLogger(__name__)

ENGAGED = ("ENGAGE", "SOLDE", "RUPTU")
BUCKETS = INVOICE_BUCKETS
DETAIL_LIMIT = 50

_ROWS = """
SELECT f.source_id, f.ligne, f.numero_facture, f.numero_interne, f.echeance_numero, f.date_facture, f.montant,
       f.site_code, v.verdict, v.rule_codes, od.etat, od.opco_code, od.conn_id, od.cfa_siren, f.echeance_date,
       f.echeance_derniere, f.echeance_fin,
       (SELECT e.etat FROM opco_echeance e WHERE e.source_id = f.source_id AND e.numero_interne = f.numero_interne
          AND e.numero = f.echeance_numero) AS echeance_etat,
       (SELECT (t.payload->>'dateRupture')::date FROM transmission t WHERE t.source_id = f.source_id
          AND t.numero_interne = f.numero_interne AND t.operation = 'RUPTURE' AND t.status = 'SENT'
          ORDER BY t.id DESC LIMIT 1) AS date_rupture,
       p.decision AS plan_decision, p.opco_code AS plan_opco, p.reason AS plan_reason,
       (SELECT string_agg(DISTINCT a.message, ' ; ') FROM facture_anomaly a WHERE a.run_id = f.run_id
          AND a.source_id = f.source_id AND a.ligne = f.ligne AND a.severity = 'error') AS anomalies
FROM staged_facture f
LEFT JOIN facture_verdict v ON v.run_id = f.run_id AND v.source_id = f.source_id AND v.ligne = f.ligne
LEFT JOIN opco_dossier od ON od.source_id = f.source_id AND od.numero_interne = f.numero_interne
LEFT JOIN LATERAL (SELECT decision, opco_code, reason FROM transmission_plan p WHERE p.source_id = f.source_id
                   AND p.numero_interne = f.numero_interne ORDER BY p.planned_at DESC LIMIT 1) p ON true
WHERE f.run_id = %s ORDER BY f.source_id, f.numero_facture, f.ligne
"""


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def decide(row: dict, only_opco: str | None, only_site: str | None) -> tuple[str, str | None, str]:
    """(decision, OPCO code, French reason) of one invoice."""
    rupture = row.get("date_rupture")
    if row.get("echeance_etat") == "ANNULEE" or (rupture and row.get("echeance_date") and
                                                 row["echeance_date"] > rupture):
        when = f" le {rupture.strftime('%d/%m/%Y')}" if rupture else ""
        return "NO_LONGER_DUE", row["opco_code"] or row["plan_opco"], (
            f"Facture sans objet : le contrat du dossier {row['numero_interne']} a été rompu{when}, l'échéance "
            f"{row['echeance_numero']} est annulée par la rupture — annuler la facture dans l'ERP (rien n'est envoyé)")
    if row["verdict"] == "TO_FIX":
        return "TO_FIX", row["opco_code"] or row["plan_opco"], (
            row["anomalies"] or "contrôle des factures : " + ", ".join(row["rule_codes"] or []))
    opco = row["opco_code"] or row["plan_opco"]
    if (only_site and row["site_code"] != only_site) or (only_opco and opco != only_opco.lower()):
        return "FILTERED", opco, f"écartée par les paramètres du run (only_opco={only_opco}, only_site={only_site})"
    if opco:
        try:
            caps = Capabilities.for_opco(opco)
        except KeyError:
            caps = None
        if caps is not None and not caps.serves("factures_v1"):
            return "NOT_TRANSMISSIBLE", opco, str(OpcoRouteNotServed(opco, "factures_v1"))
        if caps is not None and caps.contract_route() is None:
            return "NOT_TRANSMISSIBLE", opco, (
                f"Non transmissible à l'{opco_label(opco)} par API : le dossier {row['numero_interne']} n'a pas été "
                "transmis par l'API CFA-OPCO (l'OPCO n'y reçoit pas les contrats) — facture à déposer sur son portail")
    if row["etat"] in ENGAGED and row["conn_id"]:
        return "SEND", opco, ""
    if row["etat"]:
        return "WAITING_ENGAGE", opco, (f"en attente de l'engagement : le dossier {row['numero_interne']} est "
                                        f"{row['etat']} à l'{opco_label(opco)}")
    why = row["plan_reason"] or {"ROUTED": "envoyé, sans réponse enregistrée",
                                 None: "jamais transmis (en quarantaine, ou non extrait)"}.get(row["plan_decision"],
                                                                                            row["plan_decision"])
    return "WAITING_ENGAGE", opco, (f"en attente de l'engagement : le dossier {row['numero_interne']} n'est pas "
                                    f"à l'OPCO ({why})")[:1000]


def send_invoices(run_id: str, connector: str, *, dry_run: bool = False, only_opco: str | None = None,
                  only_site: str | None = None, software: dict | None = None, force: list[dict] | None = None,
                  **runner_kwargs) -> dict:
    """Decide every invoice of the run, send those that may leave (one batch per key); return
    {decisions: {decision: n}, batches: {conn_id: counters}, errors: {conn_id: why}, buckets}.

    ``force``: [{"numero_facture", "reason", "by"}] — invoices to send again although the ledger
    says the OPCO holds them or refused them as is (the DAG's ``resend_factures``, with its
    mandatory reason, kept in the ledger); they still go through the quality checks and the
    decisions above (a forced invoice to fix stays to fix)."""
    force = {f["numero_facture"]: f for f in (force or [])}
    for numero, f in force.items():
        if not (f.get("reason") or "").strip():
            raise ValueError(f"resending invoice {numero} needs a reason (force_reason), kept in the ledger")
    connector = dsn_for(connector)
    conn = connect(connector, application_name="cfa_opco.invoices")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.invoices:' || %s))", (run_id,))
            cur.execute(_ROWS, (run_id,))
            rows = _dicts(cur)
            plans, by_conn = [], {}
            for r in rows:
                decision, opco, reason = decide(r, only_opco, only_site)
                plans.append((run_id, r["source_id"], r["ligne"], decision, opco,
                              r["conn_id"] if decision == "SEND" else None, reason or None))
                if decision == "SEND":
                    by_conn.setdefault(r["conn_id"], []).append(
                        {"source_id": r["source_id"], "numero_interne": r["numero_interne"], "ligne": r["ligne"],
                         "numero_facture": r["numero_facture"], "echeance_numero": r["echeance_numero"],
                         "date_facture": r["date_facture"], "montant": r["montant"], "opco_code": opco,
                         "cfa_siren": r["cfa_siren"], "echeance_date": r["echeance_date"],
                         "echeance_derniere": r["echeance_derniere"], "echeance_fin": r["echeance_fin"],
                         "forced": r["numero_facture"] in force,
                         "force_reason": _force_reason(force.get(r["numero_facture"]))})
            cur.execute("DELETE FROM facture_plan WHERE run_id = %s", (run_id,))
            psycopg2.extras.execute_values(cur, """INSERT INTO facture_plan (run_id, source_id, ligne, decision,
                opco_code, conn_id, reason) VALUES %s""", plans, page_size=1000)
        conn.commit()
    finally:
        conn.close()
    out: dict = {"decisions": dict(Counter(p[3] for p in plans)), "batches": {}, "errors": {}}
    with cached_connections():
        for conn_id, batch in sorted(by_conn.items()):
            try:
                airflow_connection(conn_id)   # in the main thread, for the worker threads
                result = BatchRunner(run_id, connector, conn_id, software=software, dry_run=dry_run,
                                     **runner_kwargs).run(InvoiceFlow(batch))
                out["batches"][conn_id] = {k: v for k, v in result.items() if k.startswith("invoices_") or
                                           k in ("retried_later", "ambiguous", "read_backs")}
                if result.get("auth_error"):
                    out["errors"][conn_id] = result["auth_error"][:300]
            except Exception as exc:   # one key failing never stops the others: its invoices are not processed
                log.error("invoices of %s not sent: %s", conn_id, exc)
                out["errors"][conn_id] = str(exc)[:300]
    out["buckets"] = invoice_buckets(connector, run_id)["buckets"]
    log.info("invoices of %s: %s", run_id, {k: v for k, v in out.items() if k != "batches"})
    return out


def _force_reason(f: dict | None) -> str | None:
    """As a forced dossier's (transmission_plan.force_reason): the reason and who asked."""
    return f"{f['reason'].strip()} (par {f.get('by') or 'opérateur'})" if f else None


_BUCKETS_SQL = """
SELECT f.source_id, f.ligne, f.numero_facture, f.numero_interne, f.site_code, p.decision, p.opco_code, p.reason,
       t.status, t.message, v.rule_codes, od.etat
FROM staged_facture f
LEFT JOIN facture_plan p ON p.run_id = f.run_id AND p.source_id = f.source_id AND p.ligne = f.ligne
LEFT JOIN facture_verdict v ON v.run_id = f.run_id AND v.source_id = f.source_id AND v.ligne = f.ligne
LEFT JOIN opco_dossier od ON od.source_id = f.source_id AND od.numero_interne = f.numero_interne
LEFT JOIN LATERAL (SELECT status, message FROM transmission t WHERE t.operation = 'FACTURE'
                     AND t.source_id = f.source_id AND t.numero_interne = f.numero_interne
                     AND t.payload ->> 'numeroInterneFacture' = f.numero_facture
                     AND (t.run_id = f.run_id OR t.status <> 'DRY_RUN')
                   ORDER BY t.id DESC LIMIT 1) t ON p.decision = 'SEND'
WHERE f.run_id = %s
"""
_DECIDED = {"NO_LONGER_DUE": "no_longer_due", "TO_FIX": "to_fix", "FILTERED": "filtered", "NOT_TRANSMISSIBLE": "not_transmissible",
            "WAITING_ENGAGE": "waiting_engage"}
_SENT = {"SENT": "transmitted", "REJECTED": "refused", "PENDING": "in_doubt", "DRY_RUN": "dry_run"}


def _bucket(decision: str | None, status: str | None, message: str | None) -> str:
    if decision in _DECIDED:
        return _DECIDED[decision]
    if decision != "SEND" or status is None:
        return "not_processed"
    if status == "WAITING":   # on an OPCO that takes certificats de réalisation: its certificat first
        return "waiting_certificat"
    if status == "BLOCKED":
        return "to_fix" if (message or "").startswith("Facture") else "not_transmissible"
    return _SENT.get(status, "not_processed")


def invoice_buckets(connector: str, run_id: str, detail_limit: int = DETAIL_LIMIT) -> dict:
    """{staged, buckets: {bucket: n} (they add up to staged), by_opco: {opco: {bucket: n}},
    reasons: {bucket: {reason: n}}, details: {bucket: [{source_id, numero_facture, numero_interne, raison}]}}."""
    conn = connect(dsn_for(connector), application_name="cfa_opco.invoices")
    try:
        with conn.cursor() as cur:
            cur.execute(_BUCKETS_SQL, (run_id,))
            rows = _dicts(cur)
        conn.commit()
    finally:
        conn.close()
    buckets = {b: 0 for b in BUCKETS}
    by_opco: dict[str, Counter] = {}
    reasons: dict[str, Counter] = {}
    details: dict[str, list] = {}
    for r in rows:
        b = _bucket(r["decision"], r["status"], r["message"])
        buckets[b] += 1
        by_opco.setdefault(r["opco_code"] or "?", Counter())[b] += 1
        if b != "transmitted":
            why = r["reason"] if r["decision"] != "SEND" else r["message"]
            reasons.setdefault(b, Counter())[_reason_kind(b, r, why)] += 1
            if len(details.setdefault(b, [])) < detail_limit:
                details[b].append({"source_id": r["source_id"], "numero_facture": r["numero_facture"],
                                   "numero_interne": r["numero_interne"], "raison": (why or "")[:300]})
    return {"staged": len(rows), "buckets": buckets, "by_opco": {k: dict(v) for k, v in by_opco.items()},
            "reasons": {k: dict(v.most_common(10)) for k, v in reasons.items()}, "details": details}


def _reason_kind(bucket: str, r: dict, why: str | None) -> str:
    """A reason without its invoice's particulars, to count the invoices of each kind."""
    if bucket == "to_fix" and r["decision"] == "TO_FIX":
        return "contrôle des factures : " + ", ".join(r["rule_codes"] or [])
    if bucket == "to_fix":
        return ("deux factures pour une échéance (la seconde n'est jamais envoyée)" if "jamais deux factures" in
                (why or "") else "facture modifiée dans l'ERP après sa transmission")
    if bucket == "waiting_certificat":
        return "certificat de réalisation " + ("refusé par l'OPCO" if "refusé" in (why or "") else
                                               "en doute" if "en doute" in (why or "") else
                                               "impossible à établir (échéancier de l'ERP)" if "factures_sql" in
                                               (why or "") else "non transmis")
    if bucket == "waiting_engage":
        where = f"à l'{opco_label(r['opco_code'])}" if r["opco_code"] else "sans OPCO"
        return f"dossier {r['etat']} {where}" if r["etat"] else f"dossier pas encore transmis ({where})"
    if not why:
        return ""
    return (why.split(" : ")[0] if " : " in why else why)[:160]


def check_invoice_totals(result: dict) -> None:
    total = sum(result["buckets"].values())
    if total != result["staged"]:
        raise RuntimeError(f"Les comptes des factures ne tombent pas juste : {result['staged']} facture(s) dans le "
                           f"lot du run, {total} réparties dans les cases — un défaut du connecteur, à signaler")
