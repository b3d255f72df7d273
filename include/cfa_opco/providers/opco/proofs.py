"""Proof of exchange, client side: canonical JSON (the hash basis), one ExchangeRecord per
HTTP attempt and an in-memory sink. The database-backed recorder (``exchange_proof``
table) and the audit bundle live with the project: :mod:`cfa_opco.proofs`. A proof sink is
any callable taking an ExchangeRecord (``OpcoHook(proof_sink=...)``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from dataclasses import dataclass

from .canonical import canonical_json, sha256_hex  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class ExchangeRecord:
    """One HTTP attempt (columns of exchange_proof, id excepted)."""
    conn_id: str
    opco_code: str
    method: str
    route: str                       # path below the base URL, query string included
    sent_at: dt.datetime             # UTC
    cfa_siren: str | None = None
    run_id: str | None = None
    numero_interne: str | None = None
    attempt: int = 1
    received_at: dt.datetime | None = None
    request_sha256: str | None = None
    http_status: int | None = None   # None: no answer (timeout, dropped connection)
    error: str | None = None
    numero_externe: str | None = None
    numero_deca: str | None = None
    response_sha256: str | None = None
    response_body: str | None = None     # the raw answer, masked and capped, when it was not understood
    content_type: str | None = None

    def as_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                for k, v in dataclasses.asdict(self).items()}


class MemoryProofSink:
    """In-memory sink (dry runs, tests of callers)."""

    def __init__(self) -> None:
        self.records: list[ExchangeRecord] = []
        self._lock = threading.Lock()

    def __call__(self, record: ExchangeRecord) -> None:
        with self._lock:
            self.records.append(record)

    def flush(self) -> int:
        return 0
