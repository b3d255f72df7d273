"""Extraction of the day's dossiers to transmit, by state rather than by clock.

For each ERP source, its mapping SQL is run inside a COPY that reads every value as the
ERP prints it (no cast in the source query: one impossible date would fail the whole
query). Each row is then read in Python, value by value (:func:`cfa_opco.dossier.fields.
parse_value`): dates (ISO or JJ/MM/AAAA), numbers (French decimal comma, spaces), yes/no,
text encoding; identifiers are normalised (spaces, dots). A value that cannot be read is
set to NULL and recorded in ``extraction_issue`` with a French message, which the quality
gate turns into a quarantine reason: one bad row never stops the others. The parsed rows
land in a temporary table of the connector's database, where a content hash over the
fields that travel to the OPCO is computed and one set-based statement keeps the
dossiers whose content differs from what was last transmitted (new, changed, amended,
cancelled, broken off) and freezes them as the run's batch (``staged_dossier``). The
documents of the staged contracts are frozen with them, bytes and SHA-256
(:mod:`cfa_opco.dossier.pieces`, ``staged_piece``): a send never reads the ERP; a file
that cannot be read is recorded as such and its dossier still staged.

The batch is keyed by the DAG run id and sealed when complete: a retry, a cleared task or
a rerun of the same DAG run returns the same set without reading the ERPs again (unless
``reextract`` is asked), so what the quality gate checked is what transmission sends.
Only a summary (counts) leaves this module; the dossiers stay in the database.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass

from cfa_opco.db.connect import connect
from cfa_opco.dossier import fields
from cfa_opco.dossier.model import BY_NAME, COLUMN_NAMES, COLUMNS, NATURE_AVENANT, OPTIONAL_COLUMNS
from cfa_opco.dossier.pieces import stage_pieces
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
    issues: int = 0            # unreadable values recorded in extraction_issue
    rows_with_issues: int = 0  # staged rows carrying at least one (quarantined by the gate)
    rejected: int = 0          # rows without a readable numero_interne (cannot be staged)
    pieces_staged: int = 0     # documents of the staged contracts frozen with their bytes
    pieces_unreadable: int = 0  # documents that could not be read (staged_piece.error)
    error: str | None = None
    seconds: float = 0.0


def check_mapping(cur, source: Source) -> list[str]:
    """The canonical columns the mapping produces; raises when a required one is missing or
    an unknown one is returned (optional columns left out are read as NULL)."""
    cur.execute(f"SELECT * FROM ({source.dossiers_sql}) m LIMIT 0")
    produced = [d[0] for d in cur.description]
    missing = [c for c in COLUMN_NAMES if c not in produced and c not in OPTIONAL_COLUMNS]
    extra = [c for c in produced if c not in COLUMN_NAMES]
    if missing or extra:
        raise MappingError(
            f"source '{source.id}': its dossiers SQL must return exactly the canonical columns "
            f"(cfa_opco.dossier.model); missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(extra) or 'none'}")
    return produced


def _read_source(source: Source, spool) -> None:
    """The source's rows, in PostgreSQL's text COPY format, as raw bytes (no cast, no
    decoding: both are done row by row by :class:`RowReader`)."""
    conn = connect(source.connection, application_name=f"cfa_opco.extract.{source.id}")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            produced = set(check_mapping(cur, source))
            cols = ", ".join(f"m.{c}" if c in produced else f"NULL::{BY_NAME[c].sql_type} AS {c}"
                             for c in COLUMN_NAMES)
            cur.copy_expert(f"COPY (SELECT {cols} FROM ({source.dossiers_sql}) m) TO STDOUT", spool)
    finally:
        conn.close()


_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_UNESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_TYPES = tuple(c.type for c in COLUMNS)
_NUMERO = COLUMN_NAMES.index("numero_interne")
_IDENTIFIER_POS = {COLUMN_NAMES.index(c): c for c in fields.IDENTIFIERS}


def _escape(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


class RowReader:
    """Reads the raw rows of one source into canonical rows (text COPY format for the
    connector), collecting the values it cannot read. Parsed values are cached per
    (type, raw text): ERP values repeat (dates, rates, sessions)."""

    def __init__(self, source_id: str):
        self.source_id = source_id
        self.issues: list[tuple] = []      # (numero_interne|None, row_number, field, valeur, message)
        self.rows_with_issues = 0
        self.rejected = 0
        self._cache: dict[tuple[str, str], object] = {}

    def _field(self, raw: bytes, pos: int) -> str | None:
        if raw == b"\\N":
            return None
        if b"\\" in raw:
            raw = _UNESCAPE.sub(lambda m: _UNESCAPES.get(m[1], m[1]), raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = raw.decode("cp1252", errors="replace")
            raise fields.Unreadable(f"« {shown[:40]} » n'est pas du texte UTF-8 valide (octets "
                                    "d'un autre encodage, souvent Latin-1/Windows-1252) : à ressaisir "
                                    "dans l'ERP ou à convertir") from None

    def _fast(self, line: bytes) -> list | None:
        """The common case, one check per line: valid UTF-8, no escape, no mojibake or
        control character anywhere, every non-text value already known or readable.
        None sends the line to :meth:`_slow`, which finds and words each problem."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if fields.MOJIBAKE.search(text):
            return None
        cache = self._cache
        values = []
        append = values.append
        try:
            for pos, (raw, typ) in enumerate(zip(text.split("\t"), _TYPES)):
                if raw == "\\N":
                    append(None)
                elif typ == "text":
                    raw = raw.strip()
                    if raw and pos in _IDENTIFIER_POS:
                        raw = fields.normalize_identifier(_IDENTIFIER_POS[pos], raw)
                    append(raw or None)
                else:
                    key = (typ, raw)
                    try:
                        append(cache[key])
                    except KeyError:
                        value = cache[key] = fields.parse_value(typ, raw)
                        append(value)
        except fields.Unreadable:
            return None
        return values

    def _slow(self, raw_fields: list[bytes]) -> tuple[list, list]:
        values, problems = [], []
        for pos, (raw, typ) in enumerate(zip(raw_fields, _TYPES)):
            column = COLUMN_NAMES[pos]
            try:
                text = self._field(raw, pos)
                value = None if text is None else fields.parse_value(typ, text, column)
                if pos in _IDENTIFIER_POS and value is not None:
                    value = fields.normalize_identifier(column, value)
            except fields.Unreadable as exc:
                value = None
                shown = fields.masked(column, raw.decode("utf-8", errors="replace"))
                problems.append((column, shown[:200], f"{fields.label(column)} : {exc}"))
            values.append(value)
        return values, problems

    def read(self, spool_in, spool_out) -> int:
        """Raw rows from ``spool_in`` (bytes) -> canonical rows to ``spool_out`` (text);
        returns the number of rows written."""
        written = 0
        n_cols = len(COLUMN_NAMES)
        for row_number, line in enumerate(spool_in, 1):
            line = line.rstrip(b"\n")
            raw_fields = line.split(b"\t")
            if len(raw_fields) != n_cols:   # cannot happen with PostgreSQL's COPY; guarded
                self.rejected += 1
                self.issues.append((None, row_number, "*", None,
                                    f"Ligne {row_number} illisible ({len(raw_fields)} colonnes au lieu de {n_cols})"))
                continue
            # a NULL is printed \N: only another backslash (an escaped character) needs the slow path
            values = self._fast(line) if b"\\" not in line.replace(b"\\N", b"") else None
            problems, fast = [], values is not None
            if not fast:
                values, problems = self._slow(raw_fields)
            numero = values[_NUMERO]
            if problems:
                if numero is None:
                    self.rejected += 1
                else:
                    self.rows_with_issues += 1
                for column, shown, message in problems:
                    self.issues.append((numero, row_number, column, shown, message))
            if numero is None:
                if not problems:
                    self.rejected += 1
                    self.issues.append((None, row_number, "numero_interne", None,
                                        f"Ligne {row_number} sans numéro interne : elle ne peut pas être transmise"))
                continue
            if fast:   # no backslash, tab or newline in its texts: only non-texts to format
                spool_out.write("\t".join("\\N" if v is None else v if v.__class__ is str else _escape(v)
                                          for v in values))
            else:
                spool_out.write("\t".join(_escape(v) for v in values))
            spool_out.write("\n")
            written += 1
        return written


def _stage_source(cur, run_id: str, source: Source, spool, reader: RowReader) -> SourceResult:
    res = SourceResult(source.id)
    cols = ", ".join(COLUMN_NAMES)
    cur.execute("DROP TABLE IF EXISTS incoming")
    cur.execute(f"CREATE TEMP TABLE incoming AS SELECT {cols}, content_hash "
                "FROM staged_dossier WITH NO DATA")
    spool.seek(0)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as parsed:
        reader.read(spool, parsed)
        parsed.seek(0)
        cur.copy_expert(f"COPY incoming ({cols}) FROM STDIN", parsed)
    cur.execute("UPDATE incoming SET content_hash = md5(ROW({})::text)".format(
        ", ".join(HASHED_COLUMNS)))
    res.issues, res.rows_with_issues, res.rejected = (len(reader.issues), reader.rows_with_issues,
                                                      reader.rejected)
    if reader.issues:
        buf = "".join("\t".join(_escape(v) for v in (run_id, source.id, *issue)) + "\n"
                      for issue in reader.issues)
        cur.copy_expert("COPY extraction_issue (run_id, source_id, numero_interne, row_number, field, "
                        "valeur, message) FROM STDIN", io.StringIO(buf))
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
              -- (a NULL statut is not a cancellation: such a row is staged)
              AND NOT (r.transmitted_hash IS NULL AND i.statut IS NOT DISTINCT FROM 'ANNULE')
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


def _stage_source_pieces(cur, run_id: str, source: Source, result: SourceResult) -> None:
    """The documents of the source's staged contracts (avenants carry none), frozen with
    them; a documents query that fails fails the source (caught by :func:`extract`)."""
    if not source.pieces_sql:
        return
    cur.execute("SELECT numero_interne FROM staged_dossier WHERE run_id = %s AND source_id = %s "
                "AND nature <> %s", (run_id, source.id, NATURE_AVENANT))
    counts = stage_pieces(cur, run_id, source, [r[0] for r in cur.fetchall()])
    result.pieces_staged, result.pieces_unreadable = counts["staged"], counts["unreadable"]


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
                cur.execute("DELETE FROM staged_piece WHERE run_id = %s", (run_id,))
                cur.execute("DELETE FROM staged_dossier WHERE run_id = %s", (run_id,))
                cur.execute("DELETE FROM extraction_issue WHERE run_id = %s", (run_id,))
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
                    with tempfile.TemporaryFile("w+b") as spool:
                        _read_source(source, spool)
                        result = _stage_source(cur, run_id, source, spool, RowReader(source.id))
                    _stage_source_pieces(cur, run_id, source, result)
                    cur.execute("RELEASE SAVEPOINT source")
                except Exception as exc:  # one source's failure is reported, not fatal
                    cur.execute("ROLLBACK TO SAVEPOINT source")
                    result = SourceResult(source.id, error=f"{type(exc).__name__}: {exc}".strip())
                    log.error("source %s could not be extracted: %s", source.id, result.error)
                result.seconds = round(time.perf_counter() - t0, 2)
                results.append(result)
                log.info("source %s: %s rows read, %s new, %s changed, %s unchanged%s%s", source.id,
                         result.read, result.staged_new, result.staged_changed, result.unchanged,
                         f", {len(result.duplicates)} duplicate numeroInterne" if result.duplicates else "",
                         f", {result.rows_with_issues} rows with unreadable values (quarantined), "
                         f"{result.rejected} rows without a numero_interne" if result.issues else "")
                if result.pieces_staged or result.pieces_unreadable:
                    log.info("source %s: %s documents frozen, %s unreadable", source.id, result.pieces_staged,
                             result.pieces_unreadable)
            summary = {
                "run_id": run_id,
                "extracted": sum(r.staged_new + r.staged_changed for r in results),
                "new": sum(r.staged_new for r in results),
                "changed": sum(r.staged_changed for r in results),
                "read": sum(r.read for r in results),
                "rows_with_issues": sum(r.rows_with_issues for r in results),
                "rejected_rows": sum(r.rejected for r in results),
                "pieces_staged": sum(r.pieces_staged for r in results),
                "pieces_unreadable": sum(r.pieces_unreadable for r in results),
                "by_source": {r.source_id: {"read": r.read, "new": r.staged_new,
                                            "changed": r.staged_changed, "unchanged": r.unchanged,
                                            "duplicates": (r.duplicates or [])[:20],
                                            "duplicates_count": len(r.duplicates or []),
                                            "rows_with_issues": r.rows_with_issues,
                                            "issues": r.issues, "rejected_rows": r.rejected,
                                            "pieces_staged": r.pieces_staged,
                                            "pieces_unreadable": r.pieces_unreadable,
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
