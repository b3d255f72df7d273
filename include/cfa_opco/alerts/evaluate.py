"""What the end of a daily run alerts about, read from the connector's database (the ledger,
the OPCOs' states, the quality verdicts) for one run: dossiers in doubt, each OPCO's refusal
and error rates, the new blocking anomalies per site."""
from __future__ import annotations

from collections import Counter

from cfa_opco.db.connect import connection

# each dossier's latest DOSSIER row of the run, with what the OPCO decided since
_LEDGER_SQL = """
WITH t AS (
    SELECT DISTINCT ON (source_id, numero_interne) source_id, numero_interne, opco_code, status, message
    FROM transmission WHERE run_id = %s AND operation = 'DOSSIER'
    ORDER BY source_id, numero_interne, id DESC)
SELECT t.opco_code, t.status, od.etat, t.numero_interne, t.message
FROM t LEFT JOIN opco_dossier od ON od.source_id = t.source_id AND od.numero_interne = t.numero_interne
"""
ACCEPTED = ("ENGAGE", "SOLDE", "RUPTU")


def _ledger(connector: str, run_id: str) -> list[tuple]:
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('transmission') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute(_LEDGER_SQL, (run_id,))
        return cur.fetchall()


def in_doubt(connector: str, run_id: str, rows: list[tuple] | None = None) -> dict:
    """{"by_opco": {opco: n}, "examples": [numero_interne...], "reasons": {reason: n}} of the
    run's dossiers whose send got no answer and that were not read back yet (ledger PENDING)."""
    rows = _ledger(connector, run_id) if rows is None else rows
    by_opco: Counter = Counter()
    reasons: Counter = Counter()
    examples = []
    for opco, status, _etat, numero, message in rows:
        if status == "PENDING":
            by_opco[opco or "?"] += 1
            reasons[(message or "").split(" (")[0][:120]] += 1
            if len(examples) < 50:
                examples.append(numero)
    return {"by_opco": dict(by_opco), "examples": sorted(examples), "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5])}


def opco_rates(connector: str, run_id: str, rows: list[tuple] | None = None) -> dict[str, dict]:
    """Per OPCO, for the run: refusal rate = refused / decided (ENGAGE… or REFUSE) and error
    rate = (rejected at send + in doubt + failed) / sends attempted; a rate is None with
    nothing to divide by. Dossiers never attempted (blocked, not served) are not counted."""
    rows = _ledger(connector, run_id) if rows is None else rows
    out: dict[str, dict] = {}
    for opco, status, etat, _n, _m in rows:
        s = out.setdefault(opco or "?", {"sent": 0, "rejected": 0, "in_doubt": 0, "failed": 0,
                                         "accepted": 0, "refused": 0})
        if status == "SENT":
            s["sent"] += 1
            if etat in ACCEPTED:
                s["accepted"] += 1
            elif etat == "REFUSE":
                s["refused"] += 1
        elif status == "REJECTED":
            s["rejected"] += 1
        elif status == "PENDING":
            s["in_doubt"] += 1
        elif status == "FAILED":
            s["failed"] += 1
    for s in out.values():
        s["decided"] = s["accepted"] + s["refused"]
        s["errors"] = s["rejected"] + s["in_doubt"] + s["failed"]
        s["attempted"] = s["sent"] + s["errors"]
        s["refusal_rate"] = round(s["refused"] / s["decided"], 4) if s["decided"] else None
        s["error_rate"] = round(s["errors"] / s["attempted"], 4) if s["attempted"] else None
    return out


def rates_over(stats: dict[str, dict], refusal_threshold: float, error_threshold: float,
               min_dossiers: int) -> dict[str, dict]:
    """The OPCOs whose refusal rate (over ``min_dossiers`` decisions at least) or error rate
    (over ``min_dossiers`` sends at least) is above its threshold."""
    return {opco: s for opco, s in stats.items()
            if (s["refusal_rate"] is not None and s["decided"] >= min_dossiers
                and s["refusal_rate"] > refusal_threshold)
            or (s["error_rate"] is not None and s["attempted"] >= min_dossiers and s["error_rate"] > error_threshold)}


# blocking anomalies (severity error) of the run that the dossier did not have at its previous gate
_NEW_ANOMALIES_SQL = """
WITH cur AS (
    SELECT DISTINCT a.source_id, a.numero_interne, a.rule_code, COALESCE(v.site_code, '?') AS site_code,
           v.decided_at
    FROM quality_anomaly a
    JOIN quality_verdict v ON v.run_id = a.run_id AND v.source_id = a.source_id AND v.numero_interne = a.numero_interne
    WHERE a.run_id = %(run)s AND a.severity = 'error'
),
prev AS (
    SELECT c.*, (SELECT p.run_id FROM quality_verdict p
                 WHERE p.source_id = c.source_id AND p.numero_interne = c.numero_interne
                   AND p.run_id <> %(run)s AND p.decided_at <= c.decided_at
                 ORDER BY p.decided_at DESC LIMIT 1) AS prev_run
    FROM cur c
)
SELECT site_code, rule_code, source_id, numero_interne FROM prev
WHERE prev_run IS NULL OR NOT EXISTS (
    SELECT 1 FROM quality_anomaly x WHERE x.run_id = prev.prev_run AND x.source_id = prev.source_id
       AND x.numero_interne = prev.numero_interne AND x.rule_code = prev.rule_code AND x.severity = 'error')
"""


def new_blocking_anomalies(connector: str, run_id: str) -> dict[str, dict]:
    """{site: {"by_rule": {rule_code: dossiers}, "dossiers": n}} — the blocking anomalies
    found by this run's quality gate that each dossier did not already have at its previous
    gate (a dossier left unfixed is not announced again every morning)."""
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('quality_anomaly') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute(_NEW_ANOMALIES_SQL, {"run": run_id})
        rows = cur.fetchall()
    sites: dict[str, dict] = {}
    for site, rule, source_id, numero in rows:
        s = sites.setdefault(site, {"by_rule": Counter(), "_dossiers": set()})
        s["by_rule"][rule] += 1
        s["_dossiers"].add((source_id, numero))
    return {site: {"by_rule": dict(s["by_rule"]), "dossiers": len(s["_dossiers"])} for site, s in sorted(sites.items())}
