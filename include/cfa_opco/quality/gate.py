"""The quality gate: check a run's batch, decide each dossier's verdict, keep the quarantine.

    run_quality_gate(run_id, connector) -> summary dict (small: it goes to XCom)

1. reads the run's batch (``staged_dossier``) with one COPY;
2. runs the five Great Expectations suites (one per domain, :mod:`.expectations`) over the
   prepared, deduplicated domain frames (:mod:`.rules`);
3. turns the failures into anomalies (rule code, field, masked value, French message),
   reference-record anomalies mapped back to every dossier using the record;
4. decides per dossier: TRANSMIT (no error), QUARANTINE (at least one error) or FORCED
   (an operator forced it through, with a reason, for this content of the dossier);
   warnings never block; a cancellation (statut ANNULE) is never blocked either: its
   anomalies are reported as warnings;
5. stores verdicts and anomalies (``quality_run``, ``quality_verdict``, ``quality_anomaly``;
   the view ``dossier_to_transmit`` is what transmission reads) and writes the reports.

Re-running the gate for the same run replaces that run's verdicts (idempotent). A dossier
fixed in the ERP is re-staged by the next run's extraction (it was never transmitted) and
passes without any manual step.
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pandas as pd

from cfa_opco import report_location, report_runs
from cfa_opco.db.connect import connect
from cfa_opco.quality import rules as R
from cfa_opco.quality.batch import load_batch
from cfa_opco.quality.expectations import GxRunner
from cfa_opco.quality.invoices import run_invoice_checks
from cfa_opco.quality.reports import write_run_reports

log = logging.getLogger(__name__)

VERDICT_TRANSMIT, VERDICT_QUARANTINE, VERDICT_FORCED = "TRANSMIT", "QUARANTINE", "FORCED"


class QualityGateError(RuntimeError):
    pass


# -- evaluation ----------------------------------------------------------------------------
def check_batch(df: pd.DataFrame, *, severity_overrides: dict | None = None, engine: str = "gx",
                data_docs_dir: Path | None = None, run_name: str = "cfa_opco") -> dict:
    """Check a batch DataFrame (canonical columns) with the given engine ("gx" or "pandas").

    Returns {"anomalies": DataFrame, "batch": rules.Batch, "severities": {...},
    "timings": {...}, "gx_stats": {...}, "data_docs": path or None}."""
    timings = {}
    sev = R.severities(severity_overrides)
    active = R.active_rules(sev)
    t0 = time.perf_counter()
    batch = R.prepare_batch(df)
    timings["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gx_stats, docs = {}, None
    if engine == "gx":
        runner = GxRunner(data_docs_dir)
        failing, gx_stats = runner.validate(batch, active, sev, run_name=run_name)
        timings["validate"] = time.perf_counter() - t0
        if data_docs_dir is not None:
            t1 = time.perf_counter()
            docs = runner.build_data_docs()
            timings["data_docs"] = time.perf_counter() - t1
    elif engine == "pandas":
        failing = R.failing_positions(batch, active)
        timings["validate"] = time.perf_counter() - t0
    else:
        raise ValueError(f"unknown quality engine {engine!r} (gx or pandas)")
    t0 = time.perf_counter()
    anomalies = R.build_anomalies(batch, failing, sev)
    timings["anomalies"] = time.perf_counter() - t0
    return {"anomalies": anomalies, "batch": batch, "severities": sev, "timings": timings,
            "gx_stats": gx_stats, "data_docs": docs}


def decide(dossiers: pd.DataFrame, anomalies: pd.DataFrame, forces: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-dossier verdicts (vectorised). ``dossiers`` has source_id, numero_interne,
    site_code, statut, content_hash; ``forces`` has source_id, numero_interne, force_id.
    Returns the verdict frame; ``anomalies`` of cancelled dossiers are downgraded in place."""
    keys = ["source_id", "numero_interne"]
    d = dossiers[keys + ["site_code", "statut", "content_hash"]].copy()
    if len(anomalies):
        cancelled = anomalies.merge(d[keys + ["statut"]], on=keys, how="left")["statut"].eq("ANNULE").to_numpy()
        anomalies.loc[cancelled, "severity"] = "warning"
        counts = (anomalies.assign(err=anomalies["severity"].eq("error"), warn=anomalies["severity"].eq("warning"))
                  .groupby(keys, sort=False).agg(errors=("err", "sum"), warnings=("warn", "sum")))
        codes = (anomalies[anomalies["severity"].eq("error")].drop_duplicates(keys + ["rule_code"])
                 .groupby(keys, sort=False)["rule_code"].agg(list).rename("rule_codes"))
        d = d.merge(counts, on=keys, how="left").merge(codes, on=keys, how="left")
    else:
        d["errors"], d["warnings"], d["rule_codes"] = 0, 0, None
    d["errors"] = d["errors"].fillna(0).astype(int)
    d["warnings"] = d["warnings"].fillna(0).astype(int)
    d["rule_codes"] = d["rule_codes"].map(lambda v: v if isinstance(v, list) else [])
    if forces is not None and len(forces):
        d = d.merge(forces[keys + ["force_id"]].drop_duplicates(keys, keep="last"), on=keys, how="left")
    else:
        d["force_id"] = pd.NA
    blocked = d["errors"] > 0
    d["verdict"] = VERDICT_TRANSMIT
    d.loc[blocked, "verdict"] = VERDICT_QUARANTINE
    d.loc[blocked & d["force_id"].notna(), "verdict"] = VERDICT_FORCED
    d.loc[~blocked, "force_id"] = pd.NA
    return d


def extraction_anomalies(conn, run_id: str, dossiers: pd.DataFrame, anomalies: pd.DataFrame,
                         sev: dict[str, str]) -> pd.DataFrame:
    """Add the values extraction could not read (``extraction_issue``: impossible date,
    text in a number column, bad encoding) to the run's anomalies, as rule
    EXTRACTION_VALEUR_ILLISIBLE on the dossier; the CHAMP_OBLIGATOIRE anomaly the NULLed
    value would also raise on that field is dropped (one reason, the real one)."""
    severity = sev.get(R.EXTRACTION_CODE, "error")
    if severity == "off":
        return anomalies
    with conn.cursor() as cur:
        cur.execute("""SELECT source_id, numero_interne, field, coalesce(valeur, ''), message
                       FROM extraction_issue WHERE run_id = %s AND numero_interne IS NOT NULL
                       ORDER BY source_id, numero_interne, row_number, field""", (run_id,))
        rows = cur.fetchall()
    if not rows:
        return anomalies
    issues = pd.DataFrame(rows, columns=["source_id", "numero_interne", "field", "valeur", "message"])
    issues = issues.merge(dossiers[["source_id", "numero_interne", "site_code"]],
                          on=["source_id", "numero_interne"], how="inner")
    if issues.empty:
        return anomalies
    issues = issues.assign(rule_code=R.EXTRACTION_CODE, severity=severity, domain="contrat",
                           record_type="contrat", record_ref=issues["numero_interne"],
                           record_label="Dossier " + issues["numero_interne"])[R.ANOMALY_COLUMNS]
    if len(anomalies):
        keys = ["source_id", "numero_interne", "field"]
        hit = anomalies[keys].merge(issues[keys].drop_duplicates().assign(_hit=True), on=keys, how="left")["_hit"]
        redundant = hit.fillna(False).astype(bool).to_numpy() & anomalies["rule_code"].eq("CHAMP_OBLIGATOIRE").to_numpy()
        anomalies = anomalies[~redundant]
    out = pd.concat([anomalies, issues], ignore_index=True) if len(anomalies) else issues.reset_index(drop=True)
    return out.sort_values(["source_id", "numero_interne", "rule_code", "field"], kind="stable").reset_index(drop=True)


# -- forcing -------------------------------------------------------------------------------
def _record_forces(cur, run_id: str | None, items: list[dict]) -> list[dict]:
    """Insert the operators' forces (audit trail); return one result per item."""
    results = []
    for item in items or []:
        numero = str(item.get("numero_interne") or "").strip()
        reason = str(item.get("reason") or "").strip()
        by = str(item.get("by") or "").strip()
        source = item.get("source_id")
        if not numero or not reason or not by:
            results.append({"numero_interne": numero, "status": "refused",
                            "detail": "numero_interne, reason and by are all required"})
            continue
        params = {"numero": numero, "source": source, "run": run_id}
        # the dossier's content as staged in this run (or its latest extraction)
        cur.execute("""
            SELECT s.source_id, s.content_hash, s.run_id FROM staged_dossier s
            JOIN extraction_run e USING (run_id)
            WHERE s.numero_interne = %(numero)s
              AND (%(source)s::text IS NULL OR s.source_id = %(source)s)
              AND (%(run)s::text IS NULL OR s.run_id = %(run)s)
            ORDER BY e.started_at DESC""", params)
        rows = cur.fetchall()
        seen = {}
        for src, chash, rid in rows:
            seen.setdefault(src, (chash, rid))
        if not seen:
            results.append({"numero_interne": numero, "status": "not_found",
                            "detail": "no staged dossier with this number" + (f" in run {run_id}" if run_id else "")})
            continue
        for src, (chash, rid) in seen.items():
            cur.execute("""SELECT coalesce(array_agg(DISTINCT a.rule_code), '{}') FROM quality_anomaly a
                           WHERE a.run_id = %s AND a.source_id = %s AND a.numero_interne = %s
                             AND a.severity = 'error'""", (rid, src, numero))
            codes = cur.fetchone()[0]
            cur.execute("""INSERT INTO quality_force (source_id, numero_interne, content_hash, run_id, reason,
                                                      forced_by, rule_codes)
                           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING force_id""",
                        (src, numero, chash, run_id or rid, reason, by, codes))
            force_id = cur.fetchone()[0]
            # a run already gated: its verdict changes now (transmission reads the view)
            cur.execute("""UPDATE quality_verdict SET verdict = 'FORCED', force_id = %s, decided_at = now()
                           WHERE run_id = %s AND source_id = %s AND numero_interne = %s
                             AND verdict = 'QUARANTINE' AND content_hash = %s""",
                        (force_id, rid, src, numero, chash))
            results.append({"numero_interne": numero, "source_id": src, "status": "forced",
                            "force_id": force_id, "updated_verdict": cur.rowcount > 0})
            log.warning("dossier %s/%s forced through the quality gate by %s: %s", src, numero, by, reason)
    return results


def force_dossiers(connector: str, items: list[dict], run_id: str | None = None) -> list[dict]:
    """Force dossiers through the gate: ``items`` = [{numero_interne, reason, by[, source_id]}].

    The force is kept in ``quality_force`` (audit trail) and holds for the dossier's
    current content: a later change in the ERP makes it be checked again. When ``run_id``
    was already gated, its verdict becomes FORCED immediately."""
    conn = connect(connector, application_name="cfa_opco.quality.force")
    try:
        with conn.cursor() as cur:
            res = _record_forces(cur, run_id, items)
            if run_id:
                _refresh_run_counts(cur, run_id)
        conn.commit()
        return res
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def _refresh_run_counts(cur, run_id: str) -> None:
    cur.execute("""UPDATE quality_run q SET
                     passed = c.passed, quarantined = c.quarantined, forced = c.forced
                   FROM (SELECT count(*) FILTER (WHERE verdict = 'TRANSMIT') AS passed,
                                count(*) FILTER (WHERE verdict = 'QUARANTINE') AS quarantined,
                                count(*) FILTER (WHERE verdict = 'FORCED') AS forced
                         FROM quality_verdict WHERE run_id = %s) c
                   WHERE q.run_id = %s""", (run_id, run_id))


# -- persistence ---------------------------------------------------------------------------
def _copy(cur, table: str, frame: pd.DataFrame, columns: list[str]) -> None:
    buf = io.StringIO()
    frame[columns].to_csv(buf, index=False, header=False)
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)


def _pg_array(values: list) -> str:
    return "{" + ",".join(values) + "}"


def run_quality_gate(run_id: str, connector: str, *, reports_dir: str | Path | None = None,
                     severity_overrides: dict | None = None, forced: list[dict] | None = None,
                     engine: str = "gx", data_docs: bool = True, write_reports: bool = True) -> dict:
    """Check the batch of ``run_id`` and store each dossier's verdict; return a summary.

    connector: a DSN or an Airflow connection id (cfa_opco.db.connect.connect).
    reports_dir: where this run's reports go (default: the run's folder,
    report_location.run_folder(run_id), so that the plugin and the alerts find them).
    severity_overrides: {rule code: "error" | "warning" | "off"} over the YAML catalogue.
    forced: [{numero_interne, reason, by[, source_id]}] forced through for this run.
    Returns {run_id, checked, passed, quarantined, forced, warnings, by_rule, by_site,
    report_index, timings} — counts only, safe for XCom."""
    t_start = time.perf_counter()
    out_dir = Path(reports_dir) if reports_dir else report_location.run_folder(run_id)
    conn = connect(connector, application_name="cfa_opco.quality")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.quality:' || %s))", (run_id,))
            cur.execute("SELECT sealed FROM extraction_run WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
            if not row:
                raise QualityGateError(f"run {run_id}: nothing extracted (no extraction_run row)")
            if not row[0]:
                raise QualityGateError(f"run {run_id}: the extraction is not sealed (still running or failed)")
        t0 = time.perf_counter()
        df = load_batch(conn, run_id)
        t_load = time.perf_counter() - t0
        result = check_batch(df, severity_overrides=severity_overrides, engine=engine,
                             data_docs_dir=(out_dir / "data_docs") if (data_docs and engine == "gx"
                                                                        and write_reports) else None,
                             run_name=report_location.run_folder_name(run_id))
        anomalies = extraction_anomalies(conn, run_id, df, result["anomalies"], result["severities"])
        result["anomalies"] = anomalies
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("DELETE FROM quality_run WHERE run_id = %s", (run_id,))
            cur.execute("INSERT INTO quality_run (run_id, engine, severity_overrides) VALUES (%s, %s, %s)",
                        (run_id, engine, json.dumps(severity_overrides or {})))
            force_results = _record_forces(cur, run_id, forced or [])
            cur.execute("""SELECT DISTINCT ON (f.source_id, f.numero_interne) f.source_id, f.numero_interne,
                                  f.force_id
                           FROM quality_force f JOIN staged_dossier s
                             ON s.run_id = %s AND s.source_id = f.source_id
                            AND s.numero_interne = f.numero_interne AND s.content_hash = f.content_hash
                           ORDER BY f.source_id, f.numero_interne, f.forced_at DESC""", (run_id,))
            forces = pd.DataFrame(cur.fetchall(), columns=["source_id", "numero_interne", "force_id"])
            verdicts = decide(df.assign(statut=result["batch"].dossiers["statut"]), anomalies, forces)
            verdicts["run_id"] = run_id
            verdicts["rule_codes"] = verdicts["rule_codes"].map(_pg_array)
            verdicts["force_id"] = verdicts["force_id"].astype("Int64")
            _copy(cur, "quality_verdict", verdicts,
                  ["run_id", "source_id", "numero_interne", "content_hash", "site_code", "verdict", "errors",
                   "warnings", "rule_codes", "force_id"])
            if len(anomalies):
                _copy(cur, "quality_anomaly", anomalies.assign(run_id=run_id),
                      ["run_id", "source_id", "numero_interne", "rule_code", "severity", "domain", "field",
                       "valeur", "message", "record_type", "record_ref", "record_label"])
            # forces given with this run: record which rules they overrode
            cur.execute("""UPDATE quality_force f SET rule_codes = v.rule_codes FROM quality_verdict v
                           WHERE f.run_id = %s AND f.rule_codes = '{}' AND v.run_id = f.run_id
                             AND v.source_id = f.source_id AND v.numero_interne = f.numero_interne""", (run_id,))
            summary = _summary(run_id, verdicts, anomalies)
            summary["forces"] = force_results
            cur.execute("""UPDATE quality_run SET finished_at = now(), checked = %s, passed = %s, quarantined = %s,
                             forced = %s, warnings = %s, by_rule = %s, by_site = %s WHERE run_id = %s""",
                        (summary["checked"], summary["passed"], summary["quarantined"], summary["forced"],
                         summary["warnings"], json.dumps(summary["by_rule"]), json.dumps(summary["by_site"]),
                         run_id))
        conn.commit()
        t_store = time.perf_counter() - t0
        # the run's invoices (suite cfa_opco_facture), once the dossiers' verdicts are known
        t0 = time.perf_counter()
        invoices = run_invoice_checks(conn, run_id, severity_overrides=severity_overrides, engine=engine)
        result["timings"]["invoices"] = time.perf_counter() - t0
        summary["invoices"] = {k: v for k, v in invoices.items() if k != "anomalies"}
        report_index = None
        if write_reports:
            t0 = time.perf_counter()
            report_index = write_run_reports(conn, run_id, out_dir, anomalies=anomalies, verdicts=verdicts,
                                             data_docs=result["data_docs"], invoice_anomalies=invoices["anomalies"])
            with conn.cursor() as cur:
                cur.execute("UPDATE quality_run SET report_index = %s WHERE run_id = %s", (str(report_index), run_id))
            conn.commit()
            (out_dir / report_runs.QUALITY_FILE).write_text(json.dumps(
                {**summary, "report_index": str(report_index)}, indent=2, ensure_ascii=False), encoding="utf-8")
            if not reports_dir:   # the run's folder under the reports root: retention, runs home page
                report_runs.refresh(out_dir.parent, current=out_dir)
            result["timings"]["reports"] = time.perf_counter() - t0
        summary["report_index"] = str(report_index) if report_index else None
        summary["timings"] = {k: round(v, 3) for k, v in
                              {"load": t_load, **result["timings"], "store": t_store,
                               "total": time.perf_counter() - t_start}.items()}
        log.info("quality gate %s: %s checked, %s passed, %s quarantined, %s forced, %s warnings (%.1f s)",
                 run_id, summary["checked"], summary["passed"], summary["quarantined"], summary["forced"],
                 summary["warnings"], summary["timings"]["total"])
        return summary
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def _summary(run_id: str, verdicts: pd.DataFrame, anomalies: pd.DataFrame) -> dict:
    vc = verdicts["verdict"].value_counts()
    by_rule = {}
    if len(anomalies):
        g = anomalies.groupby(["rule_code", "severity"]).agg(
            dossiers=("numero_interne", "size"), records=("record_ref", "nunique")).reset_index()
        for r in g.itertuples(index=False):
            by_rule[r.rule_code] = {"severity": r.severity, "dossiers": int(r.dossiers), "records": int(r.records)}
    by_site = {}
    for site, grp in verdicts.groupby(verdicts["site_code"].fillna("?")):
        c = grp["verdict"].value_counts()
        by_site[str(site)] = {"checked": int(len(grp)), "quarantined": int(c.get(VERDICT_QUARANTINE, 0)),
                              "forced": int(c.get(VERDICT_FORCED, 0))}
    return {"run_id": run_id, "checked": int(len(verdicts)), "passed": int(vc.get(VERDICT_TRANSMIT, 0)),
            "quarantined": int(vc.get(VERDICT_QUARANTINE, 0)), "forced": int(vc.get(VERDICT_FORCED, 0)),
            "warnings": int((verdicts["warnings"] > 0).sum()), "by_rule": by_rule, "by_site": by_site}


# -- for transmission ----------------------------------------------------------------------
def transmittable_numeros(connector: str, run_id: str) -> list[tuple[str, str]]:
    """(source_id, numero_interne) of the run's dossiers that may be sent (TRANSMIT or FORCED)."""
    return _numeros(connector, "SELECT source_id, numero_interne FROM dossier_to_transmit WHERE run_id = %s "
                               "ORDER BY 1, 2", run_id)


def quarantined_numeros(connector: str, run_id: str) -> list[tuple[str, str]]:
    """(source_id, numero_interne) of the run's dossiers held in quarantine."""
    return _numeros(connector, "SELECT source_id, numero_interne FROM quality_verdict WHERE run_id = %s "
                               "AND verdict = 'QUARANTINE' ORDER BY 1, 2", run_id)


def _numeros(connector: str, sql: str, run_id: str) -> list[tuple[str, str]]:
    conn = connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, (run_id,))
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def dossier_history(connector: str, numero_interne: str, source_id: str | None = None) -> list[dict]:
    """The verdicts of one dossier, run after run (newest first), with its anomalies' codes."""
    conn = connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT v.run_id, v.source_id, v.verdict, v.errors, v.warnings, v.rule_codes,
                                  v.decided_at, f.reason, f.forced_by
                           FROM quality_verdict v LEFT JOIN quality_force f USING (force_id)
                           WHERE v.numero_interne = %s AND (%s::text IS NULL OR v.source_id = %s)
                           ORDER BY v.decided_at DESC""", (numero_interne, source_id, source_id))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        conn.close()
