"""The outbox's decisions, as pure functions: what to do with a row given its ledger history,
how long to wait before the next try, and the French words of each outcome. No SQL, no HTTP."""
from __future__ import annotations

import enum
import math
import random

from .status import LABELS, Status


class Fate(enum.Enum):
    NEW = "new"                          # no intent for this content: record one, send
    ALREADY_SENT = "already_sent"        # the OPCO holds this very content: nothing leaves
    ALREADY_REJECTED = "already_rejected"  # refused as is: nothing leaves until the ERP changes it
    RESOLVE = "resolve"                  # an intent in doubt from before: read back (or resend) first
    CHANGED_AFTER_SEND = "changed"       # another content was sent: the norm has no update


def fate(digest: str, history: list[dict], forced: bool) -> tuple[Fate, dict | None]:
    """The fate of one content given the ledger rows of the same item (oldest first); with
    RESOLVE, the intent in doubt."""
    if forced:
        return Fate.NEW, None
    same = [t for t in history if t["content_hash"] == digest and not t["forced"]]
    if any(t["status"] == Status.SENT for t in same):
        return Fate.ALREADY_SENT, None
    if any(t["status"] == Status.REJECTED for t in same):
        return Fate.ALREADY_REJECTED, None
    in_doubt = [t for t in same if t["status"] == Status.PENDING]
    if in_doubt:
        return Fate.RESOLVE, in_doubt[-1]
    if any(t["status"] == Status.SENT and t["content_hash"] != digest for t in history):
        return Fate.CHANGED_AFTER_SEND, None
    return Fate.NEW, None


def changed_after_send_message(row: dict) -> str:
    """The norm has no update of a sent dossier: any change but a rupture is an avenant to type
    in the ERP — never a second dossier."""
    if row.get("statut") == "ANNULE":
        return ("Le dossier a été annulé dans l'ERP après sa transmission : l'annulation se fait "
                "auprès de l'OPCO (la norme n'a pas de route d'annulation) ; rien n'a été envoyé")
    return ("Le dossier a changé dans l'ERP après sa transmission : la modification se déclare par un "
            "avenant (types 31 à 38) à saisir dans l'ERP ; rien n'a été renvoyé")


def rejection_message(resp, message: str) -> str:
    if getattr(resp, "status", None) == 409:
        return ("L'OPCO connaît déjà ce numéro de dossier avec un autre contenu : une "
                "modification après envoi se transmet par un avenant")
    return ("; ".join(f"{e.get('champ') or ''}: {e.get('message')}"
                      for e in (getattr(resp, "erreurs", None) or [])) or message)[:1000]


def in_doubt_message(why: str, last_error: str = "") -> str:
    return (f"en doute : {why}{f' ({last_error})' if last_error else ''} — relu à l'OPCO avant "
            "tout renvoi par le DAG de suivi (settle_in_doubt) ou le prochain run")[:1000]


INTERRUPTED = "lot interrompu (clé refusée) : sera repris"


def backoff(n: int, base: float) -> float:
    """Before a new send after a failure without Retry-After: exponential, jittered, ≤ 30 s."""
    return min(30.0, base * 2 ** min(n, 8)) * random.uniform(0.5, 1.5)


def settle_backoff(n: int, base: float) -> float:
    """Before reading back again after an unreadable read-back: short, with jitter (a 503 or
    a held answer is not rate limiting, and a 429 of the read was already waited for by the
    hook), growing to at most 2 s so that a long outage is not hammered."""
    return min(2.0, base * 2 ** min(n, 8)) * random.uniform(0.5, 1.0)


def tick(when: float, step: float = 0.25) -> float:
    """Read-backs fall due on quarter-second ticks: those due together are read in one call."""
    return math.ceil(when / step) * step


def waiting_text(base: str, verdict, rules, etat, deca, status, known: bool) -> str:
    """Why an avenant of the base contract ``base`` cannot leave yet (French, for the ledger,
    the run report and the quality report)."""
    who = f"contrat de base {base}"
    if verdict == "QUARANTINE" and etat is None:
        return (f"en attente : le {who} est en quarantaine ({', '.join(rules or []) or 'anomalies'}) — à "
                "corriger dans l'ERP ; l'avenant partira quand l'OPCO aura accepté le contrat")
    if etat is not None and not deca:
        return (f"en attente : le {who} est à l'OPCO (état {etat}) mais pas encore accepté (pas de numéro "
                "DECA) ; l'avenant partira au premier run après l'engagement")
    if status == Status.PENDING:
        return f"en attente : le {who} est en doute (réponse de l'OPCO perdue), relu avant l'avenant"
    if status == Status.REJECTED:
        return f"en attente : le {who} a été refusé par l'OPCO ; à corriger et renvoyer avant l'avenant"
    if status in (Status.BLOCKED, Status.WAITING):
        return f"en attente : le {who} n'a pas pu être transmis ({LABELS[Status(status)]})"
    if not known:
        return f"en attente : le {who} est inconnu du connecteur (jamais extrait de l'ERP)"
    return f"en attente : le {who} n'a pas encore été transmis à l'OPCO"


NO_BASE = ("avenant sans contrat de base (numéro du contrat amendé absent dans l'ERP) : "
           "à compléter dans l'ERP")
