"""The batch's documents (pièces justificatives), frozen at extraction with the dossiers.

Everything an operation sends is frozen when the batch is: for each source, once its
dossiers are staged, :func:`stage_pieces` runs the source's documents query
(``Source.pieces_sql``, config/sources.yaml) for the staged contracts, reads each
document once — its bytes in the ERP (``contenu``) or a file under the source's
``files_root`` (``chemin``) — computes its SHA-256 and stores bytes and hash in the
connector's database (``staged_piece``). A send then reads only the connector's database
(:func:`load_staged_pieces`): a file deleted, replaced or unreachable in the ERP after
extraction does not change what leaves, and the hash in the ledger is the hash of what
the quality gate's batch held.

A document that cannot be read (file missing, unreadable, outside ``files_root``, neither
bytes nor path) is staged as a row with its reason in ``error`` and no content: extraction
goes on and the dossier stays in the batch; the send reports the document as unreadable.
A documents query that fails (ERP down, wrong mapping) fails its source, as a dossiers
query does: a batch never holds dossiers whose documents are unknown.

Avenants carry no documents (the norm attaches documents to the contract); only the
numéros the caller passes are read, extraction passes the staged contracts.

Large batches: the ERP is read by pages of :data:`PAGE` dossiers through a server-side
cursor, and the documents are written with COPY in chunks of about :data:`FLUSH_BYTES`,
so memory stays bounded whatever the batch's size.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from pathlib import Path

import psycopg2

from cfa_opco.db.connect import connect
from cfa_opco.sources import Source

log = logging.getLogger(__name__)

PAGE = 2000                 # dossiers per documents query to the ERP
FETCH = 200                 # documents fetched at a time from the ERP (server-side cursor)
FLUSH_BYTES = 16 * 2 ** 20  # documents' bytes buffered before one COPY into staged_piece
FLUSH_ROWS = 5000           # ... or documents

_COLUMNS = ("run_id", "source_id", "numero_interne", "position", "piece_ref", "type_piece",
            "nom_fichier", "type_mime", "sha256", "size", "content", "error")
_LOADED = ("piece_ref", "type_piece", "nom_fichier", "type_mime", "sha256", "size", "content", "error")


class PiecesQueryError(RuntimeError):
    """The source's documents query could not be run (its source is not extracted)."""


# -- staging (extraction) ------------------------------------------------------------------
def stage_pieces(cur_or_conn, run_id: str, source: Source, numeros: list[str]) -> dict:
    """Freeze the documents of ``numeros`` (dossiers of ``source`` already in
    ``staged_dossier`` for ``run_id``) into ``staged_piece``; return
    ``{"staged": documents frozen with their bytes, "unreadable": documents recorded with
    an error}``.

    Runs in the caller's transaction on the connector's database (a cursor or a
    connection; nothing is committed here). Staging the same dossiers again replaces
    their documents. Raises :class:`PiecesQueryError` when the ERP's documents query
    fails; a single document that cannot be read never raises."""
    counts = {"staged": 0, "unreadable": 0}
    numeros = sorted({n for n in numeros if n})
    if not numeros or not source.pieces_sql:
        return counts
    if not hasattr(cur_or_conn, "execute"):   # a connection
        with cur_or_conn.cursor() as cur:
            return _stage(cur, run_id, source, numeros, counts)
    return _stage(cur_or_conn, run_id, source, numeros, counts)


def _stage(cur, run_id: str, source: Source, numeros: list[str], counts: dict) -> dict:
    root = os.path.normpath(source.files_root) if source.files_root else None
    out = _CopyBuffer(cur)
    ignored = 0
    try:
        erp = connect(source.connection, application_name=f"cfa_opco.pieces.{source.id}")
    except psycopg2.Error as exc:
        raise PiecesQueryError(f"documents of source '{source.id}': {type(exc).__name__}: "
                               f"{str(exc).strip()}") from exc
    try:
        erp.set_session(readonly=True)
        for start in range(0, len(numeros), PAGE):
            page = numeros[start:start + PAGE]
            wanted = set(page)
            cur.execute("DELETE FROM staged_piece WHERE run_id = %s AND source_id = %s "
                        "AND numero_interne = ANY(%s)", (run_id, source.id, page))
            positions: dict[str, int] = {}
            try:
                with erp.cursor(name="cfa_opco_pieces") as ec:   # server-side: bounded memory
                    ec.itersize = FETCH
                    ec.execute(source.pieces_sql, {"numeros": page})
                    names = None
                    for values in ec:
                        if names is None:
                            names = [d[0] for d in ec.description]
                        p = dict(zip(names, values))
                        numero = str(p.get("numero_interne") or "").strip()
                        if numero not in wanted:   # not asked for: a mapping error, kept out
                            ignored += 1
                            continue
                        position = positions[numero] = positions.get(numero, 0) + 1
                        content, error = _read(p, root)
                        if content is None:
                            counts["unreadable"] += 1
                        else:
                            counts["staged"] += 1
                        out.add(run_id, source.id, numero, position, p, content, error)
            except psycopg2.Error as exc:
                if getattr(exc, "cursor", None) is not None and exc.cursor.connection is not erp:
                    raise   # the connector's COPY, not the ERP
                with contextlib.suppress(psycopg2.Error):
                    erp.rollback()
                raise PiecesQueryError(f"documents query of source '{source.id}': {type(exc).__name__}: "
                                       f"{str(exc).strip()}") from exc
            erp.commit()
        out.flush()
    finally:
        erp.close()
    if ignored:
        log.warning("source %s: %s documents returned for dossiers not asked for were ignored (check its "
                    "pieces_sql: it must filter on numero_interne = ANY(%%(numeros)s))", source.id, ignored)
    if counts["unreadable"]:
        log.warning("source %s: %s documents could not be read (kept as errors in staged_piece, run %s)",
                    source.id, counts["unreadable"], run_id)
    return counts


def _read(p: dict, root: str | None) -> tuple[bytes | memoryview | None, str | None]:
    """(content, None) or (None, why it cannot be read) — the reason names the path as
    the ERP gives it (relative to files_root), never the server's folders."""
    content = p.get("contenu")
    if content is not None:
        if isinstance(content, (bytes, bytearray, memoryview)):
            return content, None
        return None, "contenu du document non binaire dans l'ERP (bytea attendu) : requête des pièces à corriger"
    chemin = p.get("chemin")
    if not chemin:
        return None, "ni contenu ni chemin de fichier dans l'ERP"
    if root is None:
        return None, f"aucun dossier de fichiers (files_root) configuré pour la source : {chemin}"
    path = os.path.normpath(os.path.join(root, str(chemin)))
    if os.path.commonpath([root, path]) != root:
        return None, f"chemin hors du dossier des fichiers de la source : {chemin}"
    try:
        return Path(path).read_bytes(), None
    except FileNotFoundError:
        return None, f"fichier introuvable : {chemin}"
    except IsADirectoryError:
        return None, f"le chemin désigne un dossier, pas un fichier : {chemin}"
    except PermissionError:
        return None, f"fichier illisible (droits insuffisants) : {chemin}"
    except OSError as exc:
        return None, f"fichier illisible ({type(exc).__name__}) : {chemin}"


def _text(value) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


class _CopyBuffer:
    """Rows of staged_piece in COPY text format, written in chunks of bounded size."""

    def __init__(self, cur):
        self.cur = cur
        self.buf = io.StringIO()
        self.rows = 0
        self.bytes = 0

    def add(self, run_id, source_id, numero, position, p: dict, content, error) -> None:
        if content is None:
            digest = size = data = None
        else:
            digest, size = hashlib.sha256(content).hexdigest(), len(content)
            data = "\\\\x" + content.hex()   # bytea hex input, its backslash escaped for COPY
        self.buf.write("\t".join((_text(run_id), _text(source_id), _text(numero), str(position),
                                  _text(p.get("piece_ref")), _text(p.get("type_piece")),
                                  _text(p.get("nom_fichier")), _text(p.get("type_mime")),
                                  _text(digest), _text(size), data or "\\N", _text(error))))
        self.buf.write("\n")
        self.rows += 1
        self.bytes += size or 0
        if self.bytes >= FLUSH_BYTES or self.rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.buf.seek(0)
        self.cur.copy_expert(f"COPY staged_piece ({', '.join(_COLUMNS)}) FROM STDIN", self.buf)
        self.buf = io.StringIO()
        self.rows = self.bytes = 0


# -- reading (transmission) ----------------------------------------------------------------
def load_staged_pieces(conn, run_id: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
    """{(source_id, numero_interne): [document, ...]} for the ``keys`` of ``run_id``, each
    document a dict with ``type_piece``, ``nom_fichier``, ``type_mime``, ``content`` (bytes,
    or None when it could not be read), ``sha256``, ``error`` (why it could not be read),
    plus ``piece_ref`` and ``size``; in the source's order. Dossiers without documents
    are absent. Reads only the connector's database (``conn``; nothing is committed)."""
    out: dict[tuple[str, str], list[dict]] = {}
    keys = sorted({(s, n) for s, n in keys})
    if not keys:
        return out
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT p.source_id, p.numero_interne, {", ".join("p." + c for c in _LOADED)}
            FROM unnest(%s::text[], %s::text[]) AS k (source_id, numero_interne)
            JOIN staged_piece p ON p.run_id = %s AND p.source_id = k.source_id
                               AND p.numero_interne = k.numero_interne
            ORDER BY p.source_id, p.numero_interne, p.position""",
                    ([k[0] for k in keys], [k[1] for k in keys], run_id))
        while True:
            chunk = cur.fetchmany(1000)
            if not chunk:
                break
            for source_id, numero, *values in chunk:
                piece = dict(zip(_LOADED, values))
                if piece["content"] is not None:
                    piece["content"] = bytes(piece["content"])
                out.setdefault((source_id, numero), []).append(piece)
    return out


# -- forced dossiers (plan) ----------------------------------------------------------------
def copy_staged_pieces(cur, run_id: str, numeros: list[str]) -> int:
    """Documents of forced dossiers brought into ``run_id`` from an earlier run (their
    ``staged_dossier`` row copied by the plan): each of these numéros staged in ``run_id``
    without documents of its own there gets the documents frozen with the same content
    (same ``content_hash``) in the latest earlier run (``extraction_run.started_at``, the
    order the plan copies the dossier by), bytes, hashes, errors and ``staged_at`` as
    they were. Call it after the dossier rows are in ``run_id``. Returns the documents
    copied; in the caller's transaction."""
    if not numeros:
        return 0
    cols = ", ".join(c for c in _COLUMNS if c != "run_id")
    cur.execute(f"""
        INSERT INTO staged_piece (run_id, {cols}, staged_at)
        SELECT d.run_id, {", ".join("p." + c for c in _COLUMNS if c != "run_id")}, p.staged_at
        FROM staged_dossier d
        CROSS JOIN LATERAL (SELECT s.run_id FROM staged_dossier s JOIN extraction_run e USING (run_id)
                            WHERE s.source_id = d.source_id AND s.numero_interne = d.numero_interne
                              AND s.run_id <> d.run_id AND s.content_hash = d.content_hash
                            ORDER BY e.started_at DESC, s.run_id DESC LIMIT 1) src
        JOIN staged_piece p ON p.run_id = src.run_id AND p.source_id = d.source_id
                           AND p.numero_interne = d.numero_interne
        WHERE d.run_id = %(run)s AND d.numero_interne = ANY(%(numeros)s)
          AND NOT EXISTS (SELECT 1 FROM staged_piece x WHERE x.run_id = d.run_id
                          AND x.source_id = d.source_id AND x.numero_interne = d.numero_interne)""",
                {"run": run_id, "numeros": list(numeros)})
    return cur.rowcount
