"""The ERPs' invoices (factures), frozen per DAG run (issue 12, point 3).

A source's ``factures_sql`` (config/sources.yaml; no Python to add an ERP) returns one row per
invoice with the canonical columns below, as text; each value is read here in Python — dates
as JJ/MM/AAAA or ISO, amounts with a decimal comma or spaces and *every* decimal typed (three
decimals are a defect the quality suite reports, not something to round away) — and an
unreadable value is kept NULL with its French reason (``illisible``). Invoices the OPCO already
holds (a ``FACTURE`` ledger row SENT for the same source and invoice number) are not staged again.
"""
from __future__ import annotations

import json
import logging
import re
from decimal import Decimal, InvalidOperation

import psycopg2.extras

from cfa_opco.db.connect import connect, connection, dsn_for
from cfa_opco.dossier import fields
from cfa_opco.sources import Source

log = logging.getLogger(__name__)

# canonical invoice columns: name -> (type, French label)
COLUMNS = {
    "ligne": ("text", "ligne de facture"),
    "numero_facture": ("text", "numéro de facture"),
    "numero_interne": ("text", "numéro de dossier"),
    "echeance_numero": ("int", "numéro d'échéance"),
    "date_facture": ("date", "date de facture"),
    "montant": ("money", "montant de la facture"),
    "facture_siret": ("siret", "SIRET de la facture"),
    "cfa_siret": ("siret", "SIRET de l'établissement du contrat"),
    "site_code": ("text", "site"),
    "echeance_date": ("date", "date de l'échéance"),
    "echeance_montant": ("money", "montant de l'échéance"),
}
# optional columns: a mapping may return them (an older mapping without them still works)
OPTIONAL = {
    # the échéance is the last of the ERP's schedule: the certificat de réalisation AFDAS needs
    # before the invoice is then Final, else Intermediaire
    "echeance_derniere": ("bool", "dernière échéance de l'échéancier"),
    # the last day of the period the échéance covers (the certificat's dateFin)
    "echeance_fin": ("date", "fin de la période de l'échéance"),
}
_BLANKS = re.compile(r"[\s\u00a0\u202f]")


class MappingError(ValueError):
    pass


def read_money(raw: str) -> Decimal:
    """An amount as typed (« 1 234,567 », "-4600.00"), every decimal kept."""
    compact = _BLANKS.sub("", raw).replace("€", "").replace(",", ".")
    try:
        value = Decimal(compact)
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise fields.Unreadable(f"« {raw[:40]} » n'est pas un montant") from None
    if abs(value) >= Decimal("100000000000"):
        raise fields.Unreadable(f"« {raw[:40]} » est hors limites pour un montant")
    return value


def read_value(typ: str, raw):
    if raw is None:
        return None
    s = str(raw).strip()
    if not s:
        return None
    if typ == "money":
        return read_money(s)
    if typ == "siret":
        return _BLANKS.sub("", s).replace(".", "")
    return fields.parse_value(typ, s)


def read_row(row: dict) -> tuple[dict, dict]:
    """(values, {column: French reason}) of one mapped row."""
    out, bad = {}, {}
    for col, (typ, label) in (COLUMNS | OPTIONAL).items():
        try:
            out[col] = read_value(typ, row.get(col))
        except fields.Unreadable as exc:
            out[col], bad[col] = None, f"{label} illisible : {exc}"
    return out, bad


def _read_source(source: Source) -> list[dict]:
    conn = connect(source.connection, application_name=f"cfa_opco.extract.{source.id}.factures")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM ({source.factures_sql}) m LIMIT 0")
            got = [d[0] for d in cur.description]
            missing = sorted(set(COLUMNS) - set(got))
            if missing:
                raise MappingError(f"{source.id}: factures_sql must return the invoice columns; missing: "
                                   f"{', '.join(missing)}; unexpected: "
                                   f"{', '.join(sorted(set(got) - set(COLUMNS) - set(OPTIONAL)))}")
            wanted = [*COLUMNS, *(c for c in OPTIONAL if c in got)]
            cur.execute(f"SELECT {', '.join(f'm.{c}::text' for c in wanted)} FROM ({source.factures_sql}) m")
            return [dict(zip(wanted, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def stage_invoices(run_id: str, sources: list[Source], connector: str, reextract: bool = False,
                   resend: list[str] | None = None) -> dict:
    """Freeze the run's invoices (idempotent per run: a retry reuses them unless ``reextract``);
    return {staged, already_sent, unreadable, by_source: {id: n}, failed_sources: [...]}.

    ``resend``: invoice numbers to send again (the DAG's ``resend_factures``): frozen even though
    the OPCO holds them; a number no source returns is a clear error before anything is frozen."""
    resend = {n.strip() for n in (resend or []) if n and n.strip()}
    connector = dsn_for(connector)
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.factures:' || %s))", (run_id,))
        cur.execute("SELECT source_id, count(*) FROM staged_facture WHERE run_id = %s GROUP BY 1", (run_id,))
        done = dict(cur.fetchall())
        if done and not reextract:
            return {"staged": sum(done.values()), "by_source": done, "reused": True, "already_sent": 0,
                    "unreadable": 0, "failed_sources": []}
        cur.execute("DELETE FROM staged_facture WHERE run_id = %s", (run_id,))
        cur.execute("DELETE FROM facture_verdict WHERE run_id = %s", (run_id,))
        cur.execute("""SELECT DISTINCT source_id, payload->>'numeroInterneFacture' FROM transmission
                       WHERE operation = 'FACTURE' AND status = 'SENT'""")
        held = set(cur.fetchall())
        summary = {"staged": 0, "by_source": {}, "already_sent": 0, "unreadable": 0, "failed_sources": []}
        found: set[str] = set()
        for source in sources:
            if not source.factures_sql:
                continue
            try:
                mapped = _read_source(source)
            except Exception as exc:   # one source's invoices failing never stops the others
                log.error("invoices of %s could not be read: %s", source.id, exc)
                summary["failed_sources"].append(source.id)
                continue
            values = []
            for row in mapped:
                v, bad = read_row(row)
                if not v["ligne"]:
                    continue
                found.add(v["numero_facture"])
                if (source.id, v["numero_facture"]) in held and v["numero_facture"] not in resend:
                    summary["already_sent"] += 1
                    continue
                summary["unreadable"] += bool(bad)
                values.append((run_id, source.id, v["ligne"], v["numero_facture"], v["numero_interne"],
                               v["echeance_numero"], v["date_facture"], v["montant"], v["facture_siret"],
                               v["cfa_siret"], v["site_code"], v["echeance_date"], v["echeance_montant"],
                               v["echeance_derniere"], v["echeance_fin"],
                               json.dumps(bad, ensure_ascii=False) if bad else None))
            psycopg2.extras.execute_values(cur, """
                INSERT INTO staged_facture (run_id, source_id, ligne, numero_facture, numero_interne, echeance_numero,
                    date_facture, montant, facture_siret, cfa_siret, site_code, echeance_date, echeance_montant,
                    echeance_derniere, echeance_fin, illisible) VALUES %s ON CONFLICT DO NOTHING""",
                values, page_size=1000)
            summary["by_source"][source.id] = len(values)
            summary["staged"] += len(values)
        unknown = sorted(resend - found)
        if unknown:   # raised inside the transaction: nothing of this run is frozen
            unread = (f" (invoices of {', '.join(summary['failed_sources'])} could not be read)"
                      if summary["failed_sources"] else "")
            raise ValueError(f"param 'resend_factures' names invoices no ERP returns: {', '.join(unknown)}{unread} "
                             "— check the invoice numbers (as typed in the ERP)")
    log.info("invoices staged for %s: %s", run_id, summary)
    return summary


def staged_invoices(conn, run_id: str) -> list[dict]:
    """The run's frozen invoices, with the dossier's routing and OPCO state as the connector knows them."""
    with conn.cursor() as cur:
        cur.execute("""SELECT f.*, od.etat AS dossier_etat, od.opco_code AS dossier_opco, od.conn_id AS dossier_conn_id,
                              od.cfa_siren AS dossier_siren
                       FROM staged_facture f
                       LEFT JOIN opco_dossier od ON od.source_id = f.source_id AND od.numero_interne = f.numero_interne
                       WHERE f.run_id = %s ORDER BY f.source_id, f.ligne::text""", (run_id,))
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r)) for r in cur.fetchall()]
    conn.commit()
    return out
