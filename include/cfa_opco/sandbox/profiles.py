"""Response-shape profiles: how an OPCO's server *words* its answers.

The norm's public specification is not published, so real OPCO servers differ from this
sandbox in shapes nobody can list. A profile makes the sandbox answer like such a server
(bare lists, other pagination, other field names, text or HTML error pages, empty bodies)
while it keeps the same data, rules and state. ``strict`` (no profile) is the sandbox's
own, faithful shape and is what every route answered before profiles existed.

Profiles combine with ``+`` (``"bare_lists+html_gateway"``); the order does not matter;
``strict`` is the empty combination. ``wrapped_items_offset`` and ``next_link`` are two
pagination styles and cannot be combined. docs/sandbox.md describes each route's shape.

Every answer of an API route goes through :func:`render_ok`, :func:`render_list` or
:func:`render_error` (the fault layer's injected errors included): the one place where a
profile changes a response."""
from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from starlette.responses import Response

PROFILES: tuple[str, ...] = ("strict", "bare_lists", "wrapped_items_offset", "next_link", "renamed_fields",
                             "text_errors", "html_gateway", "empty_bodies")
PAGINATION_PROFILES = ("wrapped_items_offset", "next_link")

LIST_ROUTES = ("liste_v1", "etats_v2", "factures_etats_v2")
WRITE_ROUTES = ("dossiers_v1", "dossiers_v2", "documents_v1", "conventions_v1", "certificats_v2", "factures_v1",
                "rupture_v2")
GATEWAY_STATUSES = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable", 504: "504 Gateway Time-out"}
# empty_bodies: errors whose body is dropped (a payload error keeps its explanation)
EMPTY_ERROR_STATUSES = frozenset({401, 403, 404, 405, 429, 500, 502, 503, 504})

# the list key of each list route, per list profile
LIST_KEYS = {
    "strict": {"liste_v1": "dossiers", "etats_v2": "EtatDossierResult", "factures_etats_v2": "factures"},
    "wrapped_items_offset": {"liste_v1": "data", "etats_v2": "items", "factures_etats_v2": "resultats"},
    "next_link": {"liste_v1": "resultats", "etats_v2": "resultats", "factures_etats_v2": "resultats"},
}

# renamed_fields: names of the state objects (liste, etats, read, creation, rupture answers)
STATE_RENAMES = {"numeroInterne": "numeroDossier", "numeroExterne": "numeroDossierOpco", "numeroDeca": "numeroDECA",
                 "etat": "statut", "dateEtat": "dateMaj", "motifs": "motifsRefus"}
FACTURE_RENAMES = {"numeroInterneFacture": "numeroFacture", "etatFacture": "statutFacture",
                   "montantFacture": "montant", "dateEtat": "dateMaj", "montantRegle": "montantPaye"}
COUNT_KEYS = ("total", "count", "page", "taillePage", "offset", "limit")

Profile = frozenset


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def J(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


# ---- names ------------------------------------------------------------------------
def parse_profile(name: Any) -> Profile:
    """``"bare_lists+html_gateway"`` -> frozenset({...}); ``"strict"``/None/"" -> frozenset().
    Raises ValueError (French message) on an unknown name or two pagination styles."""
    if name is None:
        return Profile()
    if isinstance(name, (list, tuple, set, frozenset)):
        parts = [str(x) for x in name]
    elif isinstance(name, str):
        parts = name.split("+")
    else:
        raise ValueError(f"profil de réponse invalide : {name!r} (texte attendu, ex. \"bare_lists+html_gateway\")")
    out = set()
    for part in parts:
        p = part.strip().lower()
        if not p or p == "strict":
            continue
        if p not in PROFILES:
            raise ValueError(f"profil de réponse inconnu : {part!r} ; profils connus : {', '.join(PROFILES)} "
                             f"(combinables par '+')")
        out.add(p)
    both = [p for p in PAGINATION_PROFILES if p in out]
    if len(both) > 1:
        raise ValueError(f"profils incompatibles : {' et '.join(both)} sont deux styles de pagination ; "
                         f"n'en choisir qu'un")
    return Profile(out)


def profile_name(p: Iterable[str]) -> str:
    """Canonical name: the parts in PROFILES order, joined by '+'; 'strict' when empty."""
    s = set(p)
    return "+".join(x for x in PROFILES if x in s) or "strict"


# ---- error bodies -----------------------------------------------------------------
def text_error(status: int, errors: list[dict]) -> str:
    parts = []
    for e in errors or []:
        code, champ, msg = e.get("code"), e.get("champ"), e.get("message") or ""
        parts.append((f"[{code}] " if code else "") + (f"{champ} : " if champ else "") + msg)
    return f"Erreur {status} : " + (" ; ".join(parts) or "requête refusée") + "\n"


def gateway_page(status: int) -> str:
    title = GATEWAY_STATUSES.get(status, f"{status} Error")
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            f"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


MAINTENANCE_PAGE = ("<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Maintenance</title></head>"
                    "<body><h1>Service en maintenance</h1><p>Le service d'échange CFA-OPCO est momentanément "
                    "indisponible. Merci de réessayer ultérieurement.</p></body></html>\n")


def render_error(p: Profile, status: int, errors: list[dict], headers: dict | None = None) -> Response:
    """An error answer (4xx/5xx) in the profile's words. ``headers`` (Retry-After,
    WWW-Authenticate...) are always kept."""
    if not p:
        return J({"erreurs": errors}, status, headers)
    if "html_gateway" in p and status in GATEWAY_STATUSES:
        return Response(gateway_page(status), status_code=status, media_type="text/html", headers=headers)
    if "empty_bodies" in p and status in EMPTY_ERROR_STATUSES:
        return Response(b"", status_code=status, headers=headers)
    if "text_errors" in p:
        return Response(text_error(status, errors), status_code=status, media_type="text/plain; charset=utf-8",
                        headers=headers)
    return J({"erreurs": errors}, status, headers)


def html_200() -> Response:
    return Response(MAINTENANCE_PAGE, status_code=200, media_type="text/html")


# ---- successes --------------------------------------------------------------------
def _money(v: Any) -> Any:
    return f"{v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _rename(obj: dict, names: dict) -> dict:
    return {names.get(k, k): v for k, v in obj.items()}


def rename_state(obj: dict) -> dict:
    out = _rename(obj, STATE_RENAMES)
    if isinstance(out.get("historique"), list):
        out["historique"] = [_rename(h, STATE_RENAMES) for h in out["historique"]]
    eng = out.get("engagement")
    if isinstance(eng, dict):
        out["engagement"] = dict(eng, montantTotal=_money(eng.get("montantTotal")))
    if isinstance(out.get("echeances"), list):
        out["echeances"] = [dict(e, numero=str(e.get("numero")), montant=_money(e.get("montant")))
                            for e in out["echeances"]]
    return out


def rename_facture(obj: dict) -> dict:
    out = _rename(obj, FACTURE_RENAMES)
    if "montant" in out:
        out["montant"] = _money(out["montant"])
    if out.get("montantPaye") is not None:
        out["montantPaye"] = _money(out["montantPaye"])
    if isinstance(out.get("dossiers"), list):
        out["dossiers"] = [dict(d, montant=_money(d.get("montant"))) for d in out["dossiers"]]
    return out


def rename_item(route: str, obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    if route in ("factures_etats_v2", "factures_v1"):
        return rename_facture(obj)
    if route in ("liste_v1", "etats_v2", "dossier_read_v2", "dossiers_v1", "dossiers_v2", "rupture_v2"):
        return rename_state(obj)
    return obj


def render_ok(p: Profile, route: str, obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    """A successful answer of a non-list route."""
    if not p:
        return J(obj, status, headers)
    if "empty_bodies" in p and route in WRITE_ROUTES:
        if route in ("dossiers_v1", "dossiers_v2"):
            status = {201: 202, 200: 204}.get(status, status)
        elif status == 200:
            status = 204
        return Response(b"", status_code=status, headers=headers)
    if "renamed_fields" in p:
        obj = rename_item(route, obj)
    return J(obj, status, headers)


# ---- lists and pagination -----------------------------------------------------------
@dataclass
class Paging:
    """What a list request asks for, in the profile's pagination style."""
    offset: int
    limit: int | None          # None: everything (liste, factures in strict)
    debut: int | None = None
    fin: int | None = None
    page: int | None = None    # page-number style only


def encode_cursor(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        d = json.loads(raw)
        if not isinstance(d, dict) or not isinstance(d.get("o"), int) or not isinstance(d.get("l"), int) \
                or d["o"] < 0 or not (1 <= d["l"] <= 1_000_000):
            raise ValueError
        for k in ("d", "f"):
            if d.get(k) is not None and not isinstance(d[k], int):
                raise ValueError
        return d
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("curseur invalide ou expiré : reprendre la lecture depuis la première page")


def read_paging(p: Profile, params, *, default: int, maximum: int, now: int,
                parse_int: Callable[[str | None, str, int, int, int], int],
                parse_time: Callable[[str | None, str], int | None], paged: bool = True) -> Paging:
    """Reads numeroPage/taillePage (page style), offset/limit (wrapped_items_offset) or
    curseur (next_link) from ``params``; dateDebut/dateFin in every style. ``paged`` False:
    a route that the strict style does not paginate (factures/etats)."""
    if "next_link" in p and params.get("curseur"):
        d = decode_cursor(params["curseur"])
        return Paging(d["o"], d["l"], d.get("d"), d.get("f"))
    debut = parse_time(params.get("dateDebut"), "dateDebut")
    fin = parse_time(params.get("dateFin"), "dateFin")
    if "wrapped_items_offset" in p:
        off = parse_int(params.get("offset"), "offset", 0, 0, 1_000_000_000)
        lim = parse_int(params.get("limit"), "limit", default, 1, maximum)
        return Paging(off, lim, debut, fin)
    if "next_link" in p:
        size = parse_int(params.get("taillePage"), "taillePage", default, 1, maximum)
        # the window is frozen at the first page so that the cursor's pages do not shift
        return Paging(0, size, debut, fin if fin is not None else now + 1)
    if not paged:
        return Paging(0, None, debut, fin)
    page = parse_int(params.get("numeroPage"), "numeroPage", 1, 1, 10_000_000)
    size = parse_int(params.get("taillePage"), "taillePage", default, 1, maximum)
    return Paging((page - 1) * size, size, debut, fin, page)


def render_list(p: Profile, route: str, items: list, total: int, pg: Paging, *, url: str, base_url: str,
                extra: dict | None = None) -> Response:
    """A list answer in a non-strict profile (the strict shape is built by the route).
    ``url``: the route's path (/<opco>/ApiEchangeCFA/...); ``base_url``: scheme://host."""
    renamed = "renamed_fields" in p
    if renamed:
        items = [rename_item(route, x) for x in items]
    num = (lambda v: str(v)) if renamed else (lambda v: v)   # noqa: E731
    headers: dict[str, str] = {}
    nxt = None
    if "next_link" in p and pg.limit is not None and pg.offset + len(items) < total:
        cur = encode_cursor({"o": pg.offset + pg.limit, "l": pg.limit, "d": pg.debut, "f": pg.fin})
        nxt = f"{url}?curseur={cur}"
        headers["Link"] = f'<{base_url}{nxt}>; rel="next"'
    if "empty_bodies" in p and not items:
        return Response(b"", status_code=204, headers=headers or None)
    if "bare_lists" in p:
        headers.setdefault("X-Total-Count", str(total))
        return J(items, 200, headers)
    if "next_link" in p:
        return J({LIST_KEYS["next_link"][route]: items, "suivant": nxt}, 200, headers or None)
    if "wrapped_items_offset" in p:
        body = {LIST_KEYS["wrapped_items_offset"][route]: items, "offset": num(pg.offset),
                "limit": num(pg.limit if pg.limit is not None else len(items)), "total": num(total)}
        return J(dict(body, **(extra or {})), 200)
    # renamed_fields / text_errors / html_gateway / empty_bodies alone: the strict wrapper
    if route == "etats_v2":
        body = {"total": num(total), "count": num(len(items)), "page": num(pg.page), "taillePage": num(pg.limit),
                "EtatDossierResult": items}
    elif route == "liste_v1":
        body = {"dossiers": items, **(extra or {})}
    else:
        body = {"factures": items, "count": num(len(items))}
    return J(body, 200)


class Html200:
    """html_gateway's occasional 200 with an HTML page (GET API routes; not processed)."""

    def __init__(self, share: float = 0.02, seed: int = 4321):
        self.configure(share, seed)

    def configure(self, share: float, seed: int) -> None:
        self.share = float(share)
        self.rng = random.Random(seed)

    def draw(self) -> bool:
        return self.share > 0 and self.rng.random() < self.share
