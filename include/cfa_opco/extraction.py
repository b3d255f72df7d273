"""Extraction of the day's dossiers to transmit, by state rather than by clock.

For each ERP source, its mapping SQL is run inside a COPY that also computes, in the
source database, a content hash over the fields that travel to the OPCO. The rows land in
a temporary table of the connector's database, where one set-based statement keeps the
dossiers whose content differs from what was last transmitted (new, changed, amended,
cancelled, broken off) and freezes them as the run's batch (``staged_dossier``).

The batch is keyed by the DAG run id and sealed when complete: a retry, a cleared task or
a rerun of the same DAG run returns the same set without reading the ERPs again (unless
``reextract`` is asked), so what the quality gate checked is what transmission sends.
Only a summary (counts) leaves this module; the dossiers stay in the database.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from dataclasses import dataclass

from cfa_opco.db.connect import connect
from cfa_opco.dossier.model import COLUMN_NAMES
from cfa_opco.sources import Source

log = logging.getLogger(__name__)

# Metadata that changes without the dossier changing (ERP ids, timestamps) stays out of
# the hash: touching a row in the ERP must not resend the dossier.
_NOT_HASHED = {"source_modifie_le", "site_code", "etablissement_ref", "entreprise_ref",
               "apprenant_ref", "session_ref", "maitre1_ref", "maitre2_ref"}
HASHED_COLUMNS = tuple(c for c in COLUMN_NAMES if c not in _NOT_HASHED)


class MappingError(ValueError):
    """The source's mapping SQL does not produce the canonical columns."""


@dataclass
class SourceResult:
    source_id: str
    read: int = 0
    staged_new: int = 0
    staged_changed: int = 0
    unchanged: int = 0
    duplicates: list | None = None
    error: str | None = None
    seconds: float = 0.0


def check_mapping(cur, source: Source) -> None:
    cur.execute(f"SELECT * FROM ({source.dossiers_sql}) m LIMIT 0")
    produced = [d[0] for d in cur.description]
    missing = [c for c in COLUMN_NAMES if c not in produced]
    extra = [c for c in produced if c not in COLUMN_NAMES]
    if missing or extra:
        raise MappingError(
            f"source '{source.id}': its dossiers SQL must return exactly the canonical columns "
            f"(cfa_opco.dossier.model); missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(extra) or 'none'}")


def _read_source(source: Source, spool) -> None:
    cols = ", ".join(f"m.{c}" for c in COLUMN_NAMES)
    hashed = ", ".join(f"m.{c}" for c in HASHED_COLUMNS)
    conn = connect(source.connection, application_name=f"cfa_opco.extract.{source.id}")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            check_mapping(cur, source)
            cur.copy_expert(
                f"COPY (SELECT {cols}, md5(ROW({hashed})::text) AS content_hash "
                f"FROM ({source.dossiers_sql}) m) TO STDOUT WITH (FORMAT csv)", spool)
    finally:
        conn.close()


def _stage_source(cur, run_id: str, source: Source, spool) -> SourceResult:
    res = SourceResult(source.id)
    cols = ", ".join(COLUMN_NAMES)
    cur.execute("DROP TABLE IF EXISTS incoming")
    cur.execute(f"CREATE TEMP TABLE incoming AS SELECT {cols}, content_hash "
                "FROM staged_dossier WITH NO DATA")
    spool.seek(0)
    cur.copy_expert(f"COPY incoming ({cols}, content_hash) FROM STDIN WITH (FORMAT csv)", spool)
    cur.execute("SELECT count(*), count(*) FILTER (WHERE source_id IS DISTINCT FROM %s) FROM incoming",
                (source.id,))
    res.read, foreign = cur.fetchone()
    if foreign:
        raise MappingError(f"source '{source.id}': {foreign} rows have a source_id other than "
                           f"'{source.id}'; the mapping must return its own source id")
    # a numero_interne twice in one source is a mapping or ERP error: both rows are kept
    # out and named, rather than one of them silently chosen
    cur.execute("""SELECT numero_interne, count(*) FROM incoming GROUP BY numero_interne
                   HAVING count(*) > 1 ORDER BY 1""")
    res.duplicates = [r[0] for r in cur.fetchall()]
    if res.duplicates:
        cur.execute("DELETE FROM incoming WHERE numero_interne = ANY(%s)", (res.duplicates,))
    cur.execute(f"""
        WITH ins AS (
            INSERT INTO staged_dossier (run_id, content_hash, change_kind, {cols})
            SELECT %(run_id)s, i.content_hash,
                   CASE WHEN r.transmitted_hash IS NULL THEN 'NEW' ELSE 'CHANGED' END,
                   {", ".join("i." + c for c in COLUMN_NAMES)}
            FROM incoming i
            LEFT JOIN dossier_registry r
                   ON r.source_id = i.source_id AND r.numero_interne = i.numero_interne
            WHERE r.transmitted_hash IS DISTINCT FROM i.content_hash
              AND NOT (r.transmitted_hash IS NULL AND i.statut = 'ANNULE')
            RETURNING change_kind)
        SELECT count(*) FILTER (WHERE change_kind = 'NEW'),
               count(*) FILTER (WHERE change_kind = 'CHANGED') FROM ins""", {"run_id": run_id})
    res.staged_new, res.staged_changed = cur.fetchone()
    res.unchanged = res.read - len(res.duplicates) - res.staged_new - res.staged_changed
    cur.execute("""
        INSERT INTO dossier_registry (source_id, numero_interne, nature, last_extracted_at,
                                      last_extracted_hash)
        SELECT source_id, numero_interne, nature, now(), content_hash FROM incoming
        ON CONFLICT (source_id, numero_interne) DO UPDATE
           SET last_extracted_at = EXCLUDED.last_extracted_at,
               last_extracted_hash = EXCLUDED.last_extracted_hash,
               nature = EXCLUDED.nature""")
    cur.execute("DROP TABLE incoming")
    return res


def extract(run_id: str, sources: list[Source], connector: str,
            logical_date: dt.date | None = None, reextract: bool = False) -> dict:
    """Freeze the run's batch of dossiers to transmit; return its summary.

    A source that cannot be read (down, wrong mapping) is reported in the summary's
    ``failed_sources`` and the others go on: one broken ERP does not hold back the rest.
    """
    conn = connect(connector, application_name="cfa_opco.extract")
    try:
        with conn.cursor() as cur:
            # one extraction of a given run at a time (two workers, or a rerun racing a retry)
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.extract:' || %s))", (run_id,))
            cur.execute("SELECT sealed, summary FROM extraction_run WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
            if row and row[0] and not reextract:
                summary = dict(row[1], reused=True)
                log.info("run %s: batch already extracted (%s dossiers), reused", run_id,
                         summary["extracted"])
                conn.commit()
                return summary
            if row:
                cur.execute("DELETE FROM staged_dossier WHERE run_id = %s", (run_id,))
                cur.execute("UPDATE extraction_run SET started_at = now(), sealed = false "
                            "WHERE run_id = %s", (run_id,))
            else:
                cur.execute("INSERT INTO extraction_run (run_id, logical_date) VALUES (%s, %s)",
                            (run_id, logical_date))
            results = []
            for source in sources:
                t0 = time.perf_counter()
                cur.execute("SAVEPOINT source")
                try:
                    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
                        _read_source(source, spool)
                        result = _stage_source(cur, run_id, source, spool)
                    cur.execute("RELEASE SAVEPOINT source")
                except Exception as exc:  # one source's failure is reported, not fatal
                    cur.execute("ROLLBACK TO SAVEPOINT source")
                    result = SourceResult(source.id, error=f"{type(exc).__name__}: {exc}".strip())
                    log.error("source %s could not be extracted: %s", source.id, result.error)
                result.seconds = round(time.perf_counter() - t0, 2)
                results.append(result)
                log.info("source %s: %s rows read, %s new, %s changed, %s unchanged%s", source.id,
                         result.read, result.staged_new, result.staged_changed, result.unchanged,
                         f", {len(result.duplicates)} duplicate numeroInterne" if result.duplicates else "")
            summary = {
                "run_id": run_id,
                "extracted": sum(r.staged_new + r.staged_changed for r in results),
                "new": sum(r.staged_new for r in results),
                "changed": sum(r.staged_changed for r in results),
                "read": sum(r.read for r in results),
                "by_source": {r.source_id: {"read": r.read, "new": r.staged_new,
                                            "changed": r.staged_changed, "unchanged": r.unchanged,
                                            "duplicates": (r.duplicates or [])[:20],
                                            "duplicates_count": len(r.duplicates or []),
                                            "seconds": r.seconds, "error": r.error}
                              for r in results},
                "failed_sources": [r.source_id for r in results if r.error],
                "reused": False,
            }
            cur.execute("UPDATE extraction_run SET sealed = true, finished_at = now(), summary = %s "
                        "WHERE run_id = %s", (json.dumps(summary), run_id))
        conn.commit()
        return summary
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
