"""What one batch came to: the counters a run summary adds up."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class BatchResult:
    """Dossier counters (sent ... dry_run: one per dossier of the batch), then those of the
    exchanges that follow a dossier (pièces, ruptures, conventions), then how the sending went."""
    conn_id: str
    sent: int = 0
    already_sent: int = 0
    resolved_in_doubt: int = 0
    rejected: int = 0
    already_rejected: int = 0
    blocked: int = 0
    in_doubt: int = 0
    waiting: int = 0
    dry_run: int = 0
    pieces_sent: int = 0
    pieces_rejected: int = 0
    pieces_blocked: int = 0
    pieces_in_doubt: int = 0
    ruptures_sent: int = 0
    ruptures_rejected: int = 0
    ruptures_blocked: int = 0
    ruptures_in_doubt: int = 0
    conventions_sent: int = 0
    conventions_rejected: int = 0
    conventions_blocked: int = 0      # held: its CONVENTION_* anomalies say why (or the route is not served)
    conventions_in_doubt: int = 0
    invoices_sent: int = 0
    invoices_rejected: int = 0
    invoices_blocked: int = 0         # never two invoices for one échéance, route not served, key refused
    invoices_in_doubt: int = 0
    invoices_dry_run: int = 0
    invoices_already_sent: int = 0
    invoices_waiting_certificat: int = 0   # AFDAS: its certificat de réalisation refused, in doubt or unknown
    certificats_sent: int = 0
    certificats_rejected: int = 0
    certificats_blocked: int = 0
    certificats_in_doubt: int = 0
    certificats_dry_run: int = 0
    retried_later: int = 0        # answers 429 (Retry-After honoured for that request)
    ambiguous: int = 0            # answers lost (timeout, dropped connection, 5xx, unreadable)
    read_backs: int = 0           # grouped read-back calls that settled them
    key_pauses: int = 0           # whole-key pauses (consecutive 429: real rate limiting)
    errors: list = field(default_factory=list)
    key_warning: str | None = None
    auth_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def error(self, numero: str, text: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append({"numero_interne": numero, "error": text[:300]})

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "lock"}
        d["transmitted"] = self.sent + self.resolved_in_doubt
        d["deferred"] = self.waiting    # (older name)
        return d
