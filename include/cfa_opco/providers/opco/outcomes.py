"""What one sending attempt of a dossier came to: :class:`SendOutcome`.

``OpcoHook.send_once`` makes exactly one attempt (no retry loop: the runner schedules
retries without blocking its batch) and says what happened, in five kinds:

=============  ===========================================================================
CREATED        2xx whose body names the dossier (numero / etat read, any field naming)
REJECTED       4xx carrying the OPCO's errors (or a 2xx carrying only ``erreurs``): French
               text in ``message``; nothing was created, do not resend as is
RETRY_LATER    429, 502, 503, 504, 408, or the request provably never reached the server
               (connection refused, write failed): resend after ``retry_after`` seconds
AMBIGUOUS      read timeout, connection dropped after the request was sent, 500, a 2xx
               with an empty or unreadable body: the write MAY have happened — read the
               OPCO back (``find_dossiers``) before any resend
UNREADABLE     a 4xx answer that cannot be understood (HTML page, empty): nothing written
               by the norm's rules, but nobody can say why: a human looks
=============  ===========================================================================
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any

from . import reading
from .norm import opco_label


class SendKind(enum.StrEnum):
    CREATED = "CREATED"
    REJECTED = "REJECTED"
    RETRY_LATER = "RETRY_LATER"
    AMBIGUOUS = "AMBIGUOUS"
    UNREADABLE = "UNREADABLE"


RETRY_STATUSES = frozenset({408, 425, 429, 502, 503, 504})


@dataclass
class SendOutcome:
    kind: SendKind
    numero_interne: str | None = None
    status: int | None = None                # None: no answer
    numero_deca: str | None = None
    numero_externe: str | None = None
    etat: str | None = None
    date_etat: str | None = None
    erreurs: list = field(default_factory=list)
    message: str = ""                        # French, for the ledger and the user
    retry_after: float | None = None         # RETRY_LATER: seconds to wait before the next attempt
    sent: bool = True                        # False: the request provably never reached the server
    response: Any = field(default=None, repr=False)   # the OpcoResponse when there was an answer

    @property
    def created(self) -> bool:
        return self.kind is SendKind.CREATED


def suggested_delay(attempt: int = 1, base: float = 0.5, cap: float = 30.0) -> float:
    """Backoff with full jitter, for RETRY_LATER without a Retry-After."""
    return random.uniform(base / 2, min(cap, base * (2 ** max(0, attempt - 1))))


def classify_answer(opco: str, route_id: str, numero: str | None, status: int, body: reading.Body,
                    retry_after: float | None, response: Any = None) -> SendOutcome:
    """The outcome of a POST that got an HTTP answer (401/403 are the caller's: they raise)."""
    who = opco_label(opco)
    common = dict(numero_interne=numero, status=status, response=response)
    if status in RETRY_STATUSES:
        what = "limite de débit atteinte" if status == 429 else "service momentanément indisponible"
        if body.kind == "html":
            what += " (page de passerelle)"
        return SendOutcome(SendKind.RETRY_LATER, retry_after=retry_after if retry_after is not None
                           else suggested_delay(), message=f"{who} : {what} (HTTP {status}), nouvel essai plus tard",
                           sent=False, **common)
    if status >= 500:
        return SendOutcome(SendKind.AMBIGUOUS, message=f"{who} : erreur du serveur (HTTP {status}) — le dossier a "
                           f"peut-être été enregistré, relecture avant tout renvoi", **common)
    errors = body.errors()
    if 200 <= status < 300:
        if body.kind != "json":
            u = reading.Unreadable(opco, "POST", route_id, body.describe(status), numero_interne=numero)
            return SendOutcome(SendKind.AMBIGUOUS, message=f"{u} — le dossier a peut-être été enregistré, "
                               f"relecture avant tout renvoi", **common)
        st = body.state()
        if st is not None and (st.etat or st.numero_deca or st.numero_externe):
            return SendOutcome(SendKind.CREATED, numero_deca=st.numero_deca, numero_externe=st.numero_externe,
                               etat=st.etat, date_etat=st.date_etat, erreurs=errors, **common)
        if errors:
            return SendOutcome(SendKind.REJECTED, erreurs=errors, message=f"Refusé par l'{who} (HTTP {status}) : "
                               f"{reading.errors_text(errors)}", **common)
        u = reading.Unreadable(opco, "POST", route_id, "réponse sans numéro ni état du dossier", status, numero)
        return SendOutcome(SendKind.AMBIGUOUS, message=f"{u} — relecture avant tout renvoi", **common)
    # 4xx: the request was refused; nothing was written
    if errors and body.kind in ("json", "text"):
        return SendOutcome(SendKind.REJECTED, erreurs=errors, message=f"Refusé par l'{who} (HTTP {status}) : "
                           f"{reading.errors_text(errors)}", **common)
    u = reading.Unreadable(opco, "POST", route_id, body.describe(status), numero_interne=numero)
    return SendOutcome(SendKind.UNREADABLE, message=str(u), **common)


def classify_no_answer(opco: str, route_id: str, numero: str | None, error: str, sent: bool,
                       timeout: bool) -> SendOutcome:
    """The outcome of a POST that got no HTTP answer."""
    who = opco_label(opco)
    if not sent:
        return SendOutcome(SendKind.RETRY_LATER, numero_interne=numero, retry_after=suggested_delay(), sent=False,
                           message=f"{who} injoignable ({error}) : requête non envoyée, nouvel essai plus tard")
    what = "pas de réponse dans le délai" if timeout else "connexion coupée après l'envoi"
    return SendOutcome(SendKind.AMBIGUOUS, numero_interne=numero,
                       message=f"{who} : {what} ({error}) — le dossier a peut-être été enregistré, relecture "
                               f"avant tout renvoi")
