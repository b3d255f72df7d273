"""What an operation is: one kind of exchange with an OPCO, declared, not programmed.

An :class:`Operation` says how its payload is built from a frozen batch row, its business
key, the routes it may use (the OPCO's capabilities pick), how one attempt is made and its
answer read (an :class:`Attempt`), how a lost answer is settled (a read-back, or none: then
it is sent again), and which state route follows it. The outbox (:mod:`..ledger`) and the
runner (:mod:`..runner`) do the rest — intent before sending, outcome after, in-doubt
settlement, pacing, retries — identically for every operation.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from cfa_opco.providers.opco.canonical import canonical_json
from cfa_opco.providers.opco.exceptions import OpcoUnavailable
from cfa_opco.providers.opco.outcomes import SendKind


_HTTP_STATUS = re.compile(r"HTTP (5\d\d)")


@dataclass
class Attempt:
    """What one attempt came to: the hook's SendOutcome kinds, whatever the route."""
    kind: SendKind
    response: Any = None              # status, numero_externe, numero_deca, erreurs, etat, date_etat, body
    retry_after: float | None = None
    message: str = ""


@dataclass
class Prepared:
    """A payload ready to leave: what the ledger keeps (payload), what is sent (body), its hash."""
    payload: dict
    body: bytes
    digest: str


@dataclass
class Job:
    """One exchange on its way: its intent's id in the ledger, and what came back."""
    op: "Operation"
    row: dict                         # the frozen batch row (a dossier of staged_dossier)
    prepared: Prepared
    item: dict | None = None          # the sub-item sent (a staged pièce), when the operation has one
    tid: int | None = None
    resolve: bool = False             # intent found in doubt: read the OPCO before sending
    status: str | None = None
    resp: Any = None
    message: str | None = None
    via: str = "post"
    attempts: int = 0                 # sends
    settles: int = 0                  # read-backs that could not be read
    absent_after: float = 0.0         # (monotonic) a read-back saying "absent" is trusted from then on
    last_error: str = ""

    @property
    def numero(self) -> str:
        return self.row["numero_interne"]

    @property
    def key(self) -> str:
        return self.op.business_key(self)


def _numero(job: Job) -> str:
    return job.row["numero_interne"]


def json_prepared(payload: dict) -> Prepared:
    body = canonical_json(payload)
    return Prepared(payload, body, hashlib.sha256(body).hexdigest())


def attempt_from_request(call: Callable[[], Any]) -> Attempt:
    """One attempt through a hook method built on ``OpcoHook.request`` (hook made with
    ``max_attempts=1, max_rate_limited=0``): a 2xx is CREATED, a 4xx REJECTED, a 429
    RETRY_LATER, no answer or a 5xx AMBIGUOUS. OpcoRouteNotServed and OpcoAuthError go
    through to the runner."""
    try:
        resp = call()
    except OpcoUnavailable as exc:
        if "429" in (exc.last_error or ""):
            return Attempt(SendKind.RETRY_LATER, retry_after=1.0, message=str(exc))
        # a 5xx other than 504 was an answer: the request arrived (no grace before a read-back
        # can trust "absent"); no answer at all (timeout, dropped) or a 504: status unknown
        m = _HTTP_STATUS.search(exc.last_error or "")
        answered = SimpleNamespace(status=int(m.group(1))) if m and m.group(1) != "504" else None
        return Attempt(SendKind.AMBIGUOUS, answered, message=str(exc))
    if getattr(resp, "ok", False):
        return Attempt(SendKind.CREATED, resp)
    return Attempt(SendKind.REJECTED, resp, message=getattr(resp, "error_text", lambda: "")() or "")


@dataclass(frozen=True)
class Operation:
    code: str                                        # transmission.operation in the ledger
    label: str                                       # French, for messages and reports
    routes: tuple[str, ...]                          # norm route ids it may use (the capability picks)
    prepare: Callable[[dict, Any], Prepared]         # (frozen row, context) -> Prepared
    send: Callable[[Any, Job], Attempt]              # (write hook, job) -> one attempt
    read_back: Callable[..., dict] | None = None     # (read hook, numeros, since, first_route_only) ->
    #                                                  {numero: state | None (absent) | Unreadable}; None:
    #                                                  the norm has no read route, a lost answer is re-sent
    state_route: tuple[str, ...] = ()                # the routes that follow its state afterwards
    business_key: Callable[[Job], str] = _numero     # what the OPCO knows it by
    counts: dict = field(default_factory=dict)       # final status -> BatchResult counter
    counts_dossier: bool = False                     # its outcome is the dossier's bucket in the run
    depends_on: Callable[[dict], tuple | None] | None = None   # the (source_id, numéro) whose numéro
    #                                                  DECA it needs before it can be built (an avenant's base)

    def counter(self, status: str) -> str | None:
        return self.counts.get(status)


class Found:
    """What a read-back found, in the shape of an answer (what the ledger records)."""
    status = 200
    erreurs = None

    def __init__(self, state):
        if isinstance(state, dict):
            body = state
        elif isinstance(state, str):
            body = {"etat": state}
        else:   # an object of the hook (attributes)
            body = {k: getattr(state, a, None) for k, a in (("etat", "etat"), ("numeroExterne", "numero_externe"),
                                                            ("numeroDeca", "numero_deca"), ("dateEtat", "date_etat"))}
            body = {k: v for k, v in body.items() if v is not None}
        self.body = body
        self.etat = body.get("etat")
        self.numero_externe = body.get("numeroExterne")
        self.numero_deca = body.get("numeroDeca")
        self.date_etat = body.get("dateEtat")
