"""The "Dossiers OPCO" view's queries, all of them, read-only (plugins/cfa_dossiers_view.py).

A dossier's *current situation* is computed from the connector's ledger like the run
report computes a run's (cfa_opco.pipeline.run_report: same buckets, same labels, same
OPCO decisions), but across runs: its latest quality verdict, its latest DOSSIER intent in
the ledger (``transmission``), the plan row of that run, and what its OPCO says of it
(``opco_dossier``). For one run, the counts are the run report's.

Every function opens its own connection in a READ ONLY transaction (connection id
``cfa_connector``, else the settings' DSN, or any DSN given) and never writes. Free texts
shown (OPCO messages, reasons) go through the proofs' masking (NIR, birth dates).
"""
from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

from cfa_opco import settings
from cfa_opco.db.connect import connect, dsn_for
from cfa_opco.outbox.status import LABELS as STATUS_LABELS
from cfa_opco.pipeline.run_report import BUCKETS, DECISIONS
from cfa_opco.providers.opco.norm import key_scope_of, opco_label, parse_conn_id
from cfa_opco.providers.opco.reading import mask

CONNECTOR_CONN_ID = "cfa_connector"
TZ = "Europe/Paris"
TREND_DAYS = 14

# the OPCO's decisions on transmitted dossiers (run_report.DECISIONS), labelled as in the run report
DECISION_LABELS = {"accepted": "Acceptés (engagés)", "refused": "Refusés", "pending_decision": "En instruction",
                   "incomplete": "Incomplets (pièces manquantes)",
                   "suivi_impossible": "Suivi impossible (l'OPCO ne peut pas être lu)"}

# the lists an operator acts on: kind → (title, SQL condition on the current situation)
LISTS: dict[str, tuple[str, str]] = {
    "refused": ("Refusés (par l'OPCO à l'envoi ou après instruction), avec les motifs",
                "(bucket = 'refused_by_opco' OR (bucket = 'transmitted' AND decision = 'refused'))"),
    "incomplete": ("Incomplets : pièces manquantes demandées par l'OPCO",
                   "bucket = 'transmitted' AND decision = 'incomplete'"),
    "needs_human_decision": (BUCKETS["needs_human_decision"], "bucket = 'needs_human_decision'"),
    "in_doubt": (BUCKETS["in_doubt"], "bucket = 'in_doubt'"),
    "not_transmissible": (BUCKETS["not_transmissible"], "bucket = 'not_transmissible'"),
    "quarantined": (BUCKETS["quarantined"], "bucket = 'quarantined'"),
    "waiting": (BUCKETS["waiting"], "bucket = 'waiting'"),
}

# Each dossier once: latest verdict ⟗ latest DOSSIER intent, that run's plan row, the OPCO's view.
# (indexes: quality_verdict_dossier, transmission_dossier_last, transmission_plan PK, opco_dossier PK)
# The key's scope is the conn id's (norm.key_scope_of, in Python): the plan records the same.
_CURRENT = """
WITH v AS (
    SELECT DISTINCT ON (source_id, numero_interne) source_id, numero_interne, run_id AS v_run, verdict,
           site_code, decided_at, rule_codes
    FROM quality_verdict ORDER BY source_id, numero_interne, decided_at DESC
), t AS (
    SELECT DISTINCT ON (source_id, numero_interne) source_id, numero_interne, id AS t_id, run_id AS t_run,
           status, opco_code AS t_opco, conn_id AS t_conn, created_at
    FROM transmission WHERE operation = 'DOSSIER' ORDER BY source_id, numero_interne, id DESC
), j AS (
    SELECT * FROM v FULL JOIN t USING (source_id, numero_interne)
), cur AS (
    SELECT j.source_id, j.numero_interne, j.v_run, j.verdict, j.site_code, j.decided_at, j.rule_codes,
           j.t_id, j.t_run, j.status,
           coalesce(od.opco_code, j.t_opco, p.opco_code) AS opco, coalesce(od.conn_id, j.t_conn, p.conn_id) AS conn_id,
           p.decision AS plan_decision, NULL::text AS key_scope, od.etat,
           greatest(j.created_at, j.decided_at, od.etat_at) AS last_at,
           CASE WHEN j.verdict = 'QUARANTINE' AND (j.t_id IS NULL OR j.created_at < j.decided_at) THEN 'quarantined'
                WHEN j.t_id IS NULL THEN CASE p.decision WHEN 'FILTERED' THEN 'filtered'
                                                         WHEN 'NEEDS_HUMAN' THEN 'needs_human_decision'
                                                         WHEN 'NOT_SERVED' THEN 'not_transmissible'
                                                         ELSE 'not_processed' END
                WHEN j.status = 'SENT' THEN 'transmitted'
                WHEN j.status = 'REJECTED' THEN 'refused_by_opco'
                WHEN j.status = 'PENDING' THEN 'in_doubt'
                WHEN j.status = 'WAITING' THEN 'waiting'
                WHEN j.status = 'DRY_RUN' THEN 'dry_run'
                WHEN j.status = 'BLOCKED' AND p.decision = 'NEEDS_HUMAN' THEN 'needs_human_decision'
                WHEN j.status = 'BLOCKED' THEN 'not_transmissible'
                ELSE 'not_processed' END AS bucket,
           CASE WHEN j.status IS DISTINCT FROM 'SENT' THEN NULL
                WHEN od.suivi_impossible_reason IS NOT NULL THEN 'suivi_impossible'
                WHEN od.etat IN ('ENGAGE', 'SOLDE', 'RUPTU') THEN 'accepted'
                WHEN od.etat = 'REFUSE' THEN 'refused'
                WHEN od.anomalies IS NOT NULL AND od.anomalies NOT IN ('[]'::jsonb, 'null'::jsonb) THEN 'incomplete'
                ELSE 'pending_decision' END AS decision
    FROM j
    LEFT JOIN transmission_plan p ON p.run_id = coalesce(j.t_run, j.v_run) AND p.source_id = j.source_id
          AND p.numero_interne = j.numero_interne
    LEFT JOIN opco_dossier od ON od.source_id = j.source_id AND od.numero_interne = j.numero_interne
)
"""


# ---- connection ----------------------------------------------------------------------
def resolve_target() -> tuple[str, bool]:
    """(DSN, True) of the connector's Airflow connection when it can be read here, else
    (the settings' DSN, False)."""
    try:
        return dsn_for(CONNECTOR_CONN_ID), True
    except Exception:   # no such connection where the API server runs: the project's DSN
        return settings.dsn("connector"), False


def default_target() -> str:
    return resolve_target()[0]


@contextlib.contextmanager
def read_only(target: str | None = None) -> Iterator[Any]:
    """A cursor in a READ ONLY transaction, rolled back and closed after."""
    conn = connect(target or default_target(), application_name="cfa_opco.ui")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            # JIT compiling costs more than these 100k-row joins take to run; the hashes fit in memory
            cur.execute("SET LOCAL statement_timeout = '30s'; SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
            yield cur
    finally:
        conn.rollback()
        conn.close()


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


# ---- texts ---------------------------------------------------------------------------
def text_of(value: Any, limit: int = 600) -> str:
    """An OPCO's motifs/anomalies/erreurs (JSON) or a message, as one masked line."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value[:1] in "[{" else value
        except ValueError:
            pass
    if isinstance(value, list):
        parts = []
        for e in value:
            if isinstance(e, dict):
                code = e.get("code") or e.get("typePiece") or e.get("type") or ""
                msg = e.get("message") or e.get("libelle") or e.get("commentaire") or e.get("champ") or ""
                parts.append(f"{code} : {msg}".strip(" :") if code and msg else str(code or msg or e))
            else:
                parts.append(str(e))
        value = " ; ".join(p for p in parts if p)
    elif isinstance(value, dict):
        value = text_of([value], limit)
    text = mask(str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _filters(opco: str | None, site: str | None) -> tuple[str, dict]:
    where, args = [], {}
    if opco:     # "-": the dossiers routed to no OPCO
        where.append("opco IS NULL" if opco == "-" else "opco = %(opco)s")
        args["opco"] = opco
    if site:
        if site == "-":
            where.append("site_code IS NULL")
        else:
            where.append("site_code = %(site)s")
            args["site"] = site
    return (" AND ".join(where) or "true"), args


# ---- home ----------------------------------------------------------------------------
def _today_start() -> str:
    return f"(date_trunc('day', now() AT TIME ZONE '{TZ}') AT TIME ZONE '{TZ}')"


def overview(target: str | None = None) -> dict:
    """Counts by situation per OPCO and per site, cumulative and today (Europe/Paris: the
    dossiers whose situation last changed today), and the last 14 days' trend.

    {"by_opco": {opco: row}, "by_site": {site: row}, "totals": row, "trend": [...]}, a row
    being {"total", "today", "buckets": {bucket: [n, today]}, "decisions": {decision: [n, today]}}
    (keys of run_report.BUCKETS / DECISIONS; opco "" = not routed, site "" = unknown)."""
    def counts() -> list[tuple]:
        with read_only(target) as cur:
            # one hash aggregate on (OPCO, site, situation), rolled up here (a few hundred rows)
            cur.execute(f"SELECT {_today_start()}")     # once: a stable expression is computed per row
            today_start = cur.fetchone()[0]
            cur.execute(_CURRENT + """
                SELECT opco, site_code, bucket, decision, count(*), count(*) FILTER (WHERE last_at >= %(today)s)
                FROM cur GROUP BY 1, 2, 3, 4""", {"today": today_start})
            return cur.fetchall()

    def trend_() -> list[dict]:
        with read_only(target) as cur:
            return _trend(cur)

    with ThreadPoolExecutor(2) as pool:     # two backends: the trend's scans beside the counts' joins
        f_rows, f_trend = pool.submit(counts), pool.submit(trend_)
        rows, trend = f_rows.result(), f_trend.result()
    blank = lambda: {"total": 0, "today": 0, "buckets": {}, "decisions": {}}  # noqa: E731
    by_opco: dict[str, dict] = {}
    by_site: dict[str, dict] = {}
    totals = blank()
    for opco, site, bucket, decision, n, today in rows:
        for row in (by_opco.setdefault(opco or "", blank()), by_site.setdefault(site or "", blank()), totals):
            row["total"] += n
            row["today"] += today
            b = row["buckets"].setdefault(bucket, [0, 0])
            b[0] += n
            b[1] += today
            if decision:
                d = row["decisions"].setdefault(decision, [0, 0])
                d[0] += n
                d[1] += today
    return {"by_opco": dict(sorted(by_opco.items())), "by_site": dict(sorted(by_site.items())),
            "totals": totals, "trend": trend}


TREND_SERIES = {"sent": "Transmis", "rejected": "Refusés à l'envoi", "blocked": "Non transmis (bloqués)",
                "in_doubt": "En doute", "quarantined": "Mis en quarantaine", "engaged": "Engagés par l'OPCO",
                "refused": "Refusés par l'OPCO"}


def _trend(cur) -> list[dict]:
    """Per day over the last 14 days: intents by outcome, quarantines, the OPCOs' decisions
    seen. [{"day": date, series: n}, ...], oldest first. Days are Europe/Paris days, binned
    from today's midnight (date_bin: no time-zone conversion per row; a day before a
    daylight-saving change is shifted by that hour)."""
    since = f"({_today_start()} - interval '{TREND_DAYS - 1} days')"
    cur.execute(f"""
        WITH o AS (SELECT {since} AS origin),
        t AS (SELECT date_bin('1 day', created_at, o.origin) AS b,
                     count(*) FILTER (WHERE status = 'SENT') AS sent,
                     count(*) FILTER (WHERE status = 'REJECTED') AS rejected,
                     count(*) FILTER (WHERE status = 'BLOCKED') AS blocked,
                     count(*) FILTER (WHERE status = 'PENDING') AS in_doubt
              FROM transmission, o WHERE created_at >= o.origin AND operation = 'DOSSIER' GROUP BY 1),
        q AS (SELECT date_bin('1 day', decided_at, o.origin) AS b, count(*) AS quarantined
              FROM quality_verdict, o WHERE decided_at >= o.origin AND verdict = 'QUARANTINE' GROUP BY 1),
        s AS (SELECT date_bin('1 day', observed_at, o.origin) AS b,
                     count(*) FILTER (WHERE etat = 'ENGAGE') AS engaged,
                     count(*) FILTER (WHERE etat = 'REFUSE') AS refused
              FROM opco_state_change, o WHERE observed_at >= o.origin AND etat IN ('ENGAGE', 'REFUSE') GROUP BY 1),
        days AS (SELECT o.origin + k * interval '1 day' AS b FROM o, generate_series(0, {TREND_DAYS - 1}) k)
        SELECT (days.b AT TIME ZONE '{TZ}')::date, coalesce(sent, 0), coalesce(rejected, 0), coalesce(blocked, 0),
               coalesce(in_doubt, 0), coalesce(quarantined, 0), coalesce(engaged, 0), coalesce(refused, 0)
        FROM days LEFT JOIN t USING (b) LEFT JOIN q USING (b) LEFT JOIN s USING (b) ORDER BY days.b""")
    return [dict(zip(("day", *TREND_SERIES), r)) for r in cur.fetchall()]


def choices(target: str | None = None) -> dict:
    """The OPCOs and sites the filters offer (those present in the connector's database)."""
    with read_only(target) as cur:
        cur.execute("""WITH RECURSIVE o AS (
                           (SELECT opco_code FROM opco_dossier ORDER BY opco_code LIMIT 1)
                           UNION ALL
                           SELECT (SELECT opco_code FROM opco_dossier WHERE opco_code > o.opco_code
                                   ORDER BY opco_code LIMIT 1) FROM o WHERE o.opco_code IS NOT NULL)
                       SELECT opco_code FROM o WHERE opco_code IS NOT NULL
                       UNION SELECT DISTINCT opco_code FROM transmission_plan
                             WHERE run_id = (SELECT run_id FROM transmission_plan ORDER BY planned_at DESC LIMIT 1)
                               AND opco_code IS NOT NULL""")
        opcos = sorted(r[0] for r in cur.fetchall())
        cur.execute("""SELECT DISTINCT site_code FROM quality_verdict
                       WHERE run_id IN (SELECT run_id FROM quality_run ORDER BY started_at DESC LIMIT 5)
                         AND site_code IS NOT NULL ORDER BY 1""")
        sites = [r[0] for r in cur.fetchall()]
    return {"opcos": opcos, "sites": sites}


# ---- lists ---------------------------------------------------------------------------
_LIST_COLUMNS = """source_id, numero_interne, opco, conn_id, key_scope, site_code, bucket, decision, status, etat,
                   last_at, v_run, t_run, t_id, rule_codes"""


def _list_sql(kind: str, opco: str | None, site: str | None) -> tuple[str, dict]:
    if kind not in LISTS:
        raise KeyError(kind)
    where, args = _filters(opco, site)
    return (_CURRENT + f"SELECT {_LIST_COLUMNS} FROM cur WHERE {LISTS[kind][1]} AND {where} "
            "ORDER BY last_at DESC NULLS LAST, source_id, numero_interne"), args


def _reason(row: dict, anomalies: list[str] | None = None) -> str:
    """Why the dossier is on its list, in the words of who said it."""
    b = row["bucket"]
    if b == "quarantined":
        return text_of(anomalies) if anomalies else ", ".join(row.get("rule_codes") or []) or "anomalies"
    if b == "transmitted" and row["decision"] == "refused":
        return text_of(row["motifs"]) or "refusé par l'OPCO (sans motif transmis)"
    if b == "transmitted" and row["decision"] == "incomplete":
        return text_of(row["anomalies"])
    if b == "refused_by_opco":
        return text_of(row["erreurs"]) or text_of(row["message"])
    if b == "needs_human_decision":
        return text_of(row["plan_reason"] or row["message"])
    return text_of(row["message"] or row["plan_reason"] or row["suivi_impossible_reason"])


def _with_reasons(cur, rows: list[dict]) -> list[dict]:
    """Each row's reason, read for these rows only (the situation query carries no text): the
    ledger's message and erreurs, the plan's reason, the OPCO's motifs and anomalies, and a
    quarantined dossier's anomaly messages."""
    if rows:
        cur.execute("""SELECT k.i, t.message, t.erreurs, p.reason, od.motifs, od.anomalies, od.suivi_impossible_reason
                       FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[], %s::text[]) AS k(i, t_id, run, s, n)
                       LEFT JOIN transmission t ON t.id = k.t_id
                       LEFT JOIN transmission_plan p ON p.run_id = k.run AND p.source_id = k.s AND p.numero_interne = k.n
                       LEFT JOIN opco_dossier od ON od.source_id = k.s AND od.numero_interne = k.n""",
                    (list(range(len(rows))), [r["t_id"] for r in rows], [r["t_run"] or r["v_run"] for r in rows],
                     [r["source_id"] for r in rows], [r["numero_interne"] for r in rows]))
        for i, message, erreurs, reason, motifs, anomalies, impossible in cur.fetchall():
            rows[i].update(message=message, erreurs=erreurs, plan_reason=reason, motifs=motifs, anomalies=anomalies,
                           suivi_impossible_reason=impossible)
    quarantined = [(r["v_run"], r["source_id"], r["numero_interne"]) for r in rows if r["bucket"] == "quarantined"]
    messages: dict[tuple, list[str]] = {}
    if quarantined:
        cur.execute("""SELECT a.run_id, a.source_id, a.numero_interne, a.rule_code, a.message
                       FROM quality_anomaly a JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(run_id, s, n)
                         ON a.run_id = k.run_id AND a.source_id = k.s AND a.numero_interne = k.n
                       WHERE a.severity = 'error' ORDER BY a.rule_code""",
                    ([q[0] for q in quarantined], [q[1] for q in quarantined], [q[2] for q in quarantined]))
        for run, s, n, code, msg in cur.fetchall():
            messages.setdefault((run, s, n), []).append({"code": code, "message": msg})
    for r in rows:
        r["reason"] = _reason(r, messages.get((r["v_run"], r["source_id"], r["numero_interne"])))
        r["situation"] = situation_label(r["bucket"], r["decision"])
        r["opco_label"] = opco_label(r["opco"]) if r["opco"] else ""
        r["key_scope"] = r["key_scope"] or (key_scope_of(r["conn_id"]) if r["conn_id"] else None)
    return rows


def situation_label(bucket: str, decision: str | None) -> str:
    if bucket == "transmitted" and decision:
        return f"{BUCKETS['transmitted']} — {DECISION_LABELS[decision]}"
    return BUCKETS.get(bucket, bucket)


def list_page(kind: str, *, opco: str | None = None, site: str | None = None, page: int = 1,
              per_page: int = 50, target: str | None = None) -> dict:
    """One page of a list (LIMIT/OFFSET on a stable order), its total and its rows."""
    page, per_page = max(1, int(page)), max(1, min(int(per_page), 500))
    sql, args = _list_sql(kind, opco, site)
    with read_only(target) as cur:
        cur.execute(f"SELECT *, count(*) OVER () AS _total FROM ({sql}) x LIMIT %(lim)s OFFSET %(off)s",
                    {**args, "lim": per_page, "off": (page - 1) * per_page})
        rows = _dicts(cur)
        total = rows[0]["_total"] if rows else None
        if total is None and page > 1:   # past the end: count alone
            cur.execute(f"SELECT count(*) FROM ({sql}) x", args)
            total = cur.fetchone()[0]
        rows = _with_reasons(cur, rows)
    return {"kind": kind, "title": LISTS[kind][0], "rows": rows, "total": total or 0, "page": page,
            "per_page": per_page, "opco": opco, "site": site}


EXPORT_COLUMNS = (("source_id", "Source"), ("numero_interne", "Numéro interne"), ("opco_label", "OPCO"),
                  ("conn_id", "Connexion (clé)"), ("key_scope", "Portée de la clé"), ("site_code", "Site"),
                  ("situation", "Situation"), ("etat", "État à l'OPCO"), ("last_at", "Dernier événement"),
                  ("reason", "Motif / raison"))


def iter_list(kind: str, *, opco: str | None = None, site: str | None = None, limit: int | None = None,
              target: str | None = None, chunk: int = 2000) -> Iterator[dict]:
    """Every row of a list (export), read through a server-side cursor, ``limit`` at most."""
    sql, args = _list_sql(kind, opco, site)
    if limit is not None:
        sql, args = f"SELECT * FROM ({sql}) x LIMIT %(lim)s", {**args, "lim": int(limit)}
    conn = connect(target or default_target(), application_name="cfa_opco.ui.export")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as aux, conn.cursor(name="cfa_ui_export") as cur:
            cur.itersize = chunk
            cur.execute(sql, args)
            while True:
                batch = cur.fetchmany(chunk)
                if not batch:
                    break
                cols = [d[0] for d in cur.description]
                yield from _with_reasons(aux, [dict(zip(cols, r)) for r in batch])
    finally:
        conn.rollback()
        conn.close()


def count_list(kind: str, *, opco: str | None = None, site: str | None = None, target: str | None = None) -> int:
    sql, args = _list_sql(kind, opco, site)
    with read_only(target) as cur:
        cur.execute(f"SELECT count(*) FROM ({sql}) x", args)
        return cur.fetchone()[0]


# ---- one dossier ---------------------------------------------------------------------
def dossier(source_id: str, numero_interne: str, target: str | None = None) -> dict | None:
    """Everything the connector knows of one dossier: its current situation, its OPCO states
    with their times, its ledger intents, every exchange with its proof (the request's
    payload hash, the answer's), its quality verdicts and their anomalies. Payloads are
    not read (personal data): their SHA-256 is."""
    key = {"s": source_id, "n": numero_interne}
    with read_only(target) as cur:
        # the current situation of this dossier only: the CTE's DISTINCT ONs restricted to it
        cur.execute(_CURRENT.replace("FROM quality_verdict ORDER BY",
                                     "FROM quality_verdict WHERE source_id = %(s)s AND numero_interne = %(n)s ORDER BY")
                    .replace("FROM transmission WHERE operation = 'DOSSIER'",
                             "FROM transmission WHERE operation = 'DOSSIER' AND source_id = %(s)s "
                             "AND numero_interne = %(n)s")
                    + f"SELECT {_LIST_COLUMNS} FROM cur", key)
        found = _dicts(cur)
        cur.execute("""SELECT id, run_id, operation, opco_code, cfa_siren, conn_id, content_hash, status, forced,
                              force_reason, requested_by, attempts, created_at, sent_at, completed_at, http_status,
                              numero_externe, numero_deca, erreurs, message
                       FROM transmission WHERE source_id = %(s)s AND numero_interne = %(n)s ORDER BY id""", key)
        ledger = _dicts(cur)
        if not found and not ledger:
            return None
        cur.execute("""SELECT opco_code, cfa_siren, conn_id, nature, numero_externe, numero_deca, etat, etat_at,
                              motifs, anomalies, sent_at, last_checked_at, first_run_id, suivi_impossible_at,
                              suivi_impossible_reason
                       FROM opco_dossier WHERE source_id = %(s)s AND numero_interne = %(n)s""", key)
        od = (_dicts(cur) or [None])[0]
        cur.execute("""SELECT id, etat, etat_at, observed_at, via, motifs, anomalies FROM opco_state_change
                       WHERE source_id = %(s)s AND numero_interne = %(n)s ORDER BY coalesce(etat_at, observed_at), id""",
                    key)
        states = _dicts(cur)
        opco = (od or {}).get("opco_code") or next((t["opco_code"] for t in reversed(ledger) if t["opco_code"]), None)
        cur.execute("""SELECT id, run_id, conn_id, opco_code, method, route, attempt, sent_at, received_at,
                              request_sha256, http_status, error, numero_externe, numero_deca, response_sha256,
                              content_type, response_body IS NOT NULL AS has_body
                       FROM exchange_proof WHERE numero_interne = %(n)s AND (%(o)s::text IS NULL OR opco_code = %(o)s)
                       ORDER BY sent_at, id""", {**key, "o": opco})
        proofs = _dicts(cur)
        cur.execute("""SELECT run_id, verdict, errors, warnings, rule_codes, decided_at, site_code, content_hash
                       FROM quality_verdict WHERE source_id = %(s)s AND numero_interne = %(n)s
                       ORDER BY decided_at DESC""", key)
        verdicts = _dicts(cur)
        anomalies = []
        if verdicts:
            cur.execute("""SELECT rule_code, severity, domain, field, valeur, message FROM quality_anomaly
                           WHERE run_id = %(r)s AND source_id = %(s)s AND numero_interne = %(n)s
                           ORDER BY severity, rule_code""", {**key, "r": verdicts[0]["run_id"]})
            anomalies = _dicts(cur)
        cur.execute("""SELECT run_id, decision, opco_code, cfa_siren, conn_id, key_scope, reason, forced, force_reason,
                              planned_at
                       FROM transmission_plan WHERE source_id = %(s)s AND numero_interne = %(n)s
                       ORDER BY planned_at DESC""", key)
        plans = _dicts(cur)
        current = _with_reasons(cur, found)[0] if found else None
    for t in ledger:
        t["status_label"] = STATUS_LABELS.get(t["status"], t["status"])
        t["erreurs_text"] = text_of(t.pop("erreurs"))
        t["message"] = text_of(t["message"])
        t["key_scope"] = key_scope_of(t["conn_id"]) if t["conn_id"] else None
    for s in states:
        s["motifs_text"], s["anomalies_text"] = text_of(s.pop("motifs")), text_of(s.pop("anomalies"))
    for p in proofs:
        p["error"] = text_of(p["error"])
    for a in anomalies:
        a["message"] = text_of(a["message"])
    if od:
        od["motifs_text"], od["anomalies_text"] = text_of(od.pop("motifs")), text_of(od.pop("anomalies"))
    return {"source_id": source_id, "numero_interne": numero_interne, "current": current, "opco_dossier": od,
            "states": states, "ledger": ledger, "proofs": proofs, "verdicts": verdicts, "anomalies": anomalies,
            "plans": plans}


def proof_body(proof_id: int, target: str | None = None) -> dict | None:
    """One exchange's raw answer as kept in the proof (masked when recorded; masked again)."""
    with read_only(target) as cur:
        cur.execute("""SELECT id, numero_interne, method, route, http_status, content_type, response_body,
                              response_sha256 FROM exchange_proof WHERE id = %s""", (int(proof_id),))
        rows = _dicts(cur)
    if not rows:
        return None
    row = rows[0]
    row["response_body"] = mask(row["response_body"]) if row["response_body"] is not None else None
    return row


def proof_bundle(source_id: str, numero_interne: str, target: str | None = None) -> dict | None:
    """The dossier's proofs for an audit: the dossier page's data plus each exchange's raw
    answer when one was kept (masked), and the integrity check of the bundle format of
    cfa_opco.proofs (which ledger hashes were actually sent)."""
    d = dossier(source_id, numero_interne, target)
    if d is None:
        return None
    bodies = {}
    for p in d["proofs"]:
        if p["has_body"]:
            body = proof_body(p["id"], target)
            if body and body["response_body"] is not None:
                bodies[p["id"]] = body
    sent = {p["request_sha256"] for p in d["proofs"] if p["request_sha256"]}
    answered = [p for p in d["proofs"] if p["http_status"] is not None]
    integrity = {"ledger_hashes_sent": sorted({t["content_hash"] for t in d["ledger"] if t["content_hash"] in sent}),
                 "ledger_hashes_never_sent": sorted({t["content_hash"] for t in d["ledger"]
                                                     if t["content_hash"] and t["content_hash"] not in sent}),
                 "attempts": len(d["proofs"]), "answered": len(answered),
                 "unanswered": len(d["proofs"]) - len(answered),
                 "statuses": sorted({p["http_status"] for p in answered})}
    return {**d, "bodies": bodies, "integrity": integrity}


# ---- keys ----------------------------------------------------------------------------
def keys(warning_days: int = 30, target: str | None = None, configured: list[str] | tuple = ()) -> list[dict]:
    """Every OPCO key (connection) the connector knows: checked ones (opco_key_status),
    used ones (opco_dossier, proofs of a successful call), polled ones (followup_poll), and
    the ``configured`` connection ids (Airflow's connections, even never used: "non vérifiée").
    Each with its scope (SIRET/SIREN), expiry date, days left, last successful call and
    ``alert`` (under the warning threshold, expired or refused)."""
    with read_only(target) as cur:
        cur.execute("""
            WITH RECURSIVE used AS (      -- loose index scans: one probe per key, whatever the volume
                (SELECT conn_id FROM opco_dossier ORDER BY conn_id LIMIT 1)
                UNION ALL
                SELECT (SELECT conn_id FROM opco_dossier WHERE conn_id > used.conn_id ORDER BY conn_id LIMIT 1)
                FROM used WHERE used.conn_id IS NOT NULL
            ), answered AS (
                (SELECT conn_id FROM exchange_proof WHERE http_status BETWEEN 200 AND 299 ORDER BY conn_id LIMIT 1)
                UNION ALL
                SELECT (SELECT conn_id FROM exchange_proof WHERE http_status BETWEEN 200 AND 299
                          AND conn_id > answered.conn_id ORDER BY conn_id LIMIT 1)
                FROM answered WHERE answered.conn_id IS NOT NULL
            ), ids AS (
                SELECT conn_id FROM used WHERE conn_id IS NOT NULL
                UNION SELECT conn_id FROM answered WHERE conn_id IS NOT NULL
                UNION SELECT conn_id FROM opco_key_status
                UNION SELECT conn_id FROM followup_poll
                UNION SELECT unnest(%(configured)s::text[])
            )
            SELECT ids.conn_id, k.opco_code, k.scope, k.siren, k.siret, k.expires_on, k.status, k.message, k.checked_at,
                   greatest(k.last_success_at,
                            (SELECT max(sent_at) FROM exchange_proof e WHERE e.conn_id = ids.conn_id
                               AND e.http_status BETWEEN 200 AND 299)) AS last_success_at,
                   (k.expires_on - (now() AT TIME ZONE %(tz)s)::date) AS days_left,
                   f.consecutive_failures, f.last_error, f.impossible_since
            FROM ids LEFT JOIN opco_key_status k USING (conn_id) LEFT JOIN followup_poll f USING (conn_id)
            ORDER BY ids.conn_id""", {"tz": TZ, "configured": list(configured)})
        rows = _dicts(cur)
    out = []
    for r in rows:
        code, ident = parse_conn_id(r["conn_id"])
        if code is None:
            continue
        r["opco_code"] = r["opco_code"] or code
        r["opco_label"] = opco_label(r["opco_code"])
        r["scope"] = r["scope"] or key_scope_of(r["conn_id"])
        r["siren"] = r["siren"] or ident[:9]
        r["siret"] = r["siret"] or (ident if len(ident) == 14 else None)
        r["message"] = text_of(r["message"])
        r["last_error"] = text_of(r["last_error"])
        r["status"] = r["status"] or "NOT_CHECKED"
        days = r["days_left"]
        r["alert"] = (r["status"] in ("EXPIRED", "INVALID", "EXPIRING")
                      or (days is not None and days <= warning_days))
        out.append(r)
    return out


KEY_STATUS_LABELS = {"VALID": "valide", "EXPIRING": "expire bientôt", "EXPIRED": "expirée", "INVALID": "refusée",
                     "NOT_SERVED": "vérification non servie par l'OPCO",
                     "NOT_CHECKED": "non vérifiée (DAG cfa_opco_followup, tâche check_keys)"}


def resend_params(numero_interne: str, reason: str = "") -> dict:
    """The daily DAG's params that send one dossier again (dags/cfa_opco_daily.py)."""
    return {"resend": [numero_interne], "force_reason": reason}

