"""Proofs of exchange in the connector's database: the buffered, thread-safe
:class:`ProofRecorder` (``exchange_proof`` table, a proof sink for OpcoHook / AsyncOpcoHook)
and the per-dossier audit bundle.

    python -m cfa_opco.proofs export MR-2026-000123 --connector DSN [-o f.json]

The records themselves (:class:`ExchangeRecord`) are the OPCO provider's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import decimal
import io
import json
import logging
import os
import sys
import threading
from typing import Any

from cfa_opco.db.connect import connect, connection
from cfa_opco.stack.airflow_env import apply_env
from cfa_opco.providers.opco.proofs import ExchangeRecord, MemoryProofSink  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def _copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


COLUMNS = ("run_id", "conn_id", "opco_code", "cfa_siren", "method", "route", "numero_interne", "attempt",
           "sent_at", "received_at", "request_sha256", "http_status", "error", "numero_externe",
           "numero_deca", "response_sha256", "response_body", "content_type")


class ProofRecorder:
    """Thread-safe sink of ExchangeRecords: buffered, written with one multi-row INSERT per
    flush (automatically every ``flush_every`` records). Usable as ``OpcoHook(proof_sink=...)``.
    ``close()`` (or leaving a ``with`` block) flushes."""

    def __init__(self, connector_target: str, flush_every: int = 200):
        self.target = connector_target
        self.flush_every = max(1, int(flush_every))
        self._buf: list[ExchangeRecord] = []
        self._lock = threading.Lock()          # guards the buffer
        self._write_lock = threading.Lock()    # one writer at a time on the DB connection
        self._conn = None
        self.written = 0

    def __call__(self, record: ExchangeRecord) -> None:
        with self._lock:
            self._buf.append(record)
            full = len(self._buf) >= self.flush_every
        if full:
            try:
                self.flush()
            except Exception as exc:   # keep the records (retried at the next flush), never break the exchange
                log.error("exchange proofs not written yet (%d buffered): %s", self.pending, type(exc).__name__)

    record = __call__

    def _db(self):
        if self._conn is None or self._conn.closed:
                        self._conn = connect(self.target, application_name="cfa_opco.proofs")
        return self._conn

    def flush(self) -> int:
        with self._write_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch:
                return 0
            conn = None
            try:
                conn = self._db()
                with conn.cursor() as cur:   # COPY: half the cost of a multi-row INSERT
                    cur.copy_expert(f"COPY exchange_proof ({', '.join(COLUMNS)}) FROM STDIN",
                                    io.StringIO("".join("\t".join([_copy_text(getattr(r, c)) for c in COLUMNS]) + "\n"
                                                        for r in batch)))
                conn.commit()
            except Exception:
                if conn is not None and not conn.closed:
                    conn.rollback()
                with self._lock:      # keep them for the next flush: a proof is never dropped silently
                    self._buf[:0] = batch
                raise
            self.written += len(batch)
            return len(batch)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "ProofRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- audit bundle -------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, memoryview):
        return v.tobytes().hex()
    return v


def _rows(cur, sql: str, args: tuple) -> list[dict]:
    cur.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [{n: _jsonable(v) for n, v in zip(names, row)} for row in cur.fetchall()]


def export_proof_bundle(connector_target: str, numero_interne: str, *, include_payload: bool = False) -> dict:
    """Everything the connector holds on one dossier — ledger (transmission), OPCO state
    (opco_dossier), state history (opco_state_change) and every HTTP exchange
    (exchange_proof) — as one JSON-able dict for an audit. Payloads (which carry the
    apprentice's NIR) are left out unless ``include_payload``; their SHA-256 stays, and
    ``integrity`` tells which ledger hashes match a request hash actually sent."""
    with connection(connector_target) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('transmission') IS NOT NULL")
        has_ledger = cur.fetchone()[0]
        transmissions = []
        if has_ledger:
            cols = "*" if include_payload else None
            if cols is None:
                cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name='transmission' "
                            "AND table_schema=current_schema() ORDER BY ordinal_position")
                cols = ", ".join(c for (c,) in cur.fetchall() if c != "payload")
            transmissions = _rows(cur, f"SELECT {cols} FROM transmission WHERE numero_interne = %s ORDER BY id",
                                  (numero_interne,))
        dossiers = _rows(cur, "SELECT * FROM opco_dossier WHERE numero_interne = %s ORDER BY source_id",
                         (numero_interne,))
        changes = _rows(cur, "SELECT * FROM opco_state_change WHERE numero_interne = %s ORDER BY id",
                        (numero_interne,))
        proofs = _rows(cur, "SELECT * FROM exchange_proof WHERE numero_interne = %s ORDER BY id",
                       (numero_interne,))
        if not include_payload:   # raw answers kept because unreadable may quote personal data
            for p in proofs:
                p.pop("response_body", None)
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
    sent_hashes = {p["request_sha256"] for p in proofs if p.get("request_sha256")}
    answered = [p for p in proofs if p.get("http_status") is not None]
    integrity = {
        "ledger_hashes_sent": sorted({t["content_hash"] for t in transmissions
                                      if t.get("content_hash") in sent_hashes}),
        "ledger_hashes_never_sent": sorted({t["content_hash"] for t in transmissions
                                            if t.get("content_hash") and t["content_hash"] not in sent_hashes}),
        "attempts": len(proofs),
        "answered": len(answered),
        "unanswered": len(proofs) - len(answered),
        "statuses": sorted({p["http_status"] for p in answered}),
    }
    return {"bundle": "cfa_opco.proof_bundle", "version": 1, "numero_interne": numero_interne,
            "generated_at": _jsonable(now), "hash_basis": "SHA-256 of canonical JSON (sorted keys, UTF-8, "
            "no spaces) of the request body, as sent; response_sha256: SHA-256 of the raw response bytes",
            "payloads_included": include_payload, "transmissions": transmissions, "opco_dossiers": dossiers,
            "state_changes": changes, "exchanges": proofs, "integrity": integrity}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.proofs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="export the proof bundle of one dossier as JSON")
    ex.add_argument("numero_interne")
    ex.add_argument("--connector", required=True, help="connector DSN or Airflow connection id")
    ex.add_argument("-o", "--output", help="file to write (default: stdout)")
    ex.add_argument("--with-payload", action="store_true", help="include the payloads sent (personal data)")
    args = parser.parse_args(argv)
    if "://" not in args.connector and "AIRFLOW_HOME" not in os.environ:
        # a connection id from a shell: the project's local Airflow (make airflow-init / make demo)
        apply_env()
    bundle = export_proof_bundle(args.connector, args.numero_interne, include_payload=args.with_payload)
    text = json.dumps(bundle, ensure_ascii=False, indent=2, sort_keys=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"{args.output}: {len(bundle['exchanges'])} exchanges, {len(bundle['transmissions'])} "
              f"transmissions, {len(bundle['state_changes'])} state changes", file=sys.stderr)
    else:
        sys.stdout.write(text + "\n")
    return 0 if (bundle["exchanges"] or bundle["transmissions"] or bundle["opco_dossiers"]) else 1


if __name__ == "__main__":
    sys.exit(main())
