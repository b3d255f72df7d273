"""How the OPCO's answers are read: one place, tolerant, never guessing.

The norm's specification is not public, and real OPCO servers differ from our sandbox in
ways nobody can list. This module reads every answer of every route, for the sync hook,
the async hook and the trigger alike:

- the body, whatever it is: JSON, empty, plain text, an HTML gateway page, broken JSON
  (:func:`classify`);
- a list, bare (``[...]``) or wrapped under ``dossiers``, ``items``, ``data``, ``resultats``,
  ``results``, ``elements``, ``content``, ``EtatDossierResult``... (:func:`extract_list`);
- the next page, by page number (``numeroPage``/``page`` + ``total``/``totalPages``), by
  offset/limit, or by a next link in the body (``next``, ``_links.next.href``...) or in the
  ``Link`` header, relative links resolved (:func:`next_page`);
- a dossier's state under the norm's field names or renamed ones (``numeroInterne`` /
  ``numeroDossier`` / ``numero``..., ``etat`` / ``statut`` / ``status``, ``dateEtat`` /
  ``dateStatut`` / ``dateMaj``...), scalar values of an unexpected type coerced, nested
  objects looked into (:func:`read_state`);
- the OPCO's errors under ``erreurs``, ``errors``, ``error``/``message``/``detail``, or a text
  body (:func:`read_errors`), including on a 200.

What cannot be understood becomes :class:`Unreadable`: a French message naming the OPCO, the
method and the route (« Réponse illisible de AKTO sur GET /v1/dossiers/liste : page HTML de
passerelle (502) »), raised or returned, never a Python exception from deep inside, never a
guess that marks a dossier sent. The raw answer (masked: NIR, birth dates) goes into the
proof record (:func:`proof_body`).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qsl, urljoin, urlsplit

from .exceptions import OpcoError
from .norm import OPCO_NAMES, ROUTES, opco_label

MAX_PROOF_BODY = 16_000          # characters of an unreadable answer kept in the proof

# ---- field names ------------------------------------------------------------------------
NUMERO_KEYS = ("numeroInterne", "numero_interne", "numeroInterneDossier", "numeroDossierInterne", "numeroDossier",
               "numero_dossier", "numero", "referenceInterne", "reference", "idInterne", "idDossier")
ETAT_KEYS = ("etat", "etatDossier", "etat_dossier", "statut", "statutDossier", "status", "state", "codeEtat")
DATE_KEYS = ("dateEtat", "date_etat", "dateStatut", "dateChangementEtat", "dateMaj", "dateMiseAJour",
             "dateModification", "updatedAt", "updated_at", "date")
DECA_KEYS = ("numeroDeca", "numeroDECA", "numero_deca", "deca", "numeroDepot")
EXTERNE_KEYS = ("numeroExterne", "numero_externe", "numeroOpco", "numeroDossierOpco", "idExterne", "id")
MOTIFS_KEYS = ("motifs", "motifsRefus", "motifRefus", "raisons")
ANOMALIES_KEYS = ("anomalies", "piecesManquantes", "pieces_manquantes")
NESTED_KEYS = ("dossier", "data", "result", "resultat", "contrat")

LIST_KEYS = ("dossiers", "EtatDossierResult", "etatDossierResult", "etats", "items", "data", "resultats",
             "results", "elements", "content", "records", "liste", "list", "rows", "values", "hits")
ERROR_KEYS = ("erreurs", "errors", "erreur", "error")
TOTAL_KEYS = ("total", "totalElements", "totalItems", "nombreTotal", "totalCount", "count", "nbResultats")
PAGES_KEYS = ("totalPages", "nombrePages", "nbPages", "pageCount")
PAGE_KEYS = ("numeroPage", "page", "pageNumber", "currentPage", "number")
SIZE_KEYS = ("taillePage", "pageSize", "size", "per_page", "perPage")
OFFSET_KEYS = ("offset", "debut", "start", "skip")
LIMIT_KEYS = ("limit", "limite", "max", "take")
NEXT_KEYS = ("next", "nextLink", "next_link", "nextPage", "suivant", "pageSuivante", "lienSuivant", "@odata.nextLink")

RE_NIR = re.compile(r"(?<!\d)[12]\s?\d{2}\s?\d{2}\s?(?:\d{2}|2[AB])\s?\d{3}\s?\d{3}(?:\s?\d{2})?(?!\d)")
RE_BIRTH = re.compile(r'("date_?[Nn]aissance\w*"\s*:\s*)"[^"]*"')
# an IBAN as typed (grouped by 4 or not); masked only when its mod-97 key checks out
RE_IBAN = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2}\d{2}(?:[ \u00a0]?[0-9A-Za-z]){11,30}(?![0-9A-Za-z])")
RE_TAGS = re.compile(r"<[^>]+>")
RE_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def opco_name(code: str | None) -> str:
    return OPCO_NAMES.get((code or "").lower(), (code or "?").upper())


class Unreadable(OpcoError):
    """An answer that cannot be understood. ``str()`` is the French message for the user."""

    def __init__(self, opco: str | None, method: str, route: str, reason: str, status: int | None = None,
                 numero_interne: str | None = None):
        self.opco, self.method, self.route, self.reason = opco, method, route, reason
        self.status, self.numero_interne = status, numero_interne
        path = ROUTES[route].path if route in ROUTES else route
        self.path = path
        st = f" ({status})" if status is not None and f"({status})" not in reason else ""
        super().__init__(f"Réponse illisible de {opco_name(opco)} sur {method} {path} : {reason}{st}")

    @property
    def message(self) -> str:
        return str(self)

    @classmethod
    def plain(cls, opco: str | None, message: str) -> "Unreadable":
        """An Unreadable whose whole message is given (no single route to name)."""
        u = cls.__new__(cls)
        OpcoError.__init__(u, message)
        u.opco, u.method, u.route, u.reason, u.status, u.numero_interne, u.path = \
            opco, "GET", None, message, None, None, None
        return u


# ---- bodies ------------------------------------------------------------------------------
@dataclass
class Body:
    """An answer's body as received: ``kind`` is json, empty, text, html or bad_json.
    :meth:`state` and :meth:`errors` are read once per answer: the response, its proof and
    the send's outcome share them (treat what they return as read-only)."""
    kind: str
    data: Any = None                   # parsed JSON (kind json)
    text: str = field(default="", repr=False)
    content_type: str | None = None
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def is_json(self) -> bool:
        return self.kind == "json"

    def state(self) -> "DossierState | None":
        """:func:`read_state` of the body when it is a JSON object, else None."""
        memo = self._memo
        if "state" not in memo:
            memo["state"] = read_state(self.data) if isinstance(self.data, dict) else None
        return memo["state"]

    def errors(self) -> list[dict]:
        """:func:`read_errors` of the body (the OPCO's ``erreurs``, from any shape)."""
        memo = self._memo
        if "errors" not in memo:
            memo["errors"] = read_errors(self)
        return memo["errors"]

    def describe(self, status: int | None = None) -> str:
        """French words for what the body is (for Unreadable messages)."""
        st = f" ({status})" if status is not None else ""
        if self.kind == "empty":
            return f"corps de réponse vide{st}"
        if self.kind == "html":
            title = RE_TITLE.search(self.text)
            t = _short(html.unescape(title.group(1))) if title else ""
            return f"page HTML de passerelle{st}" + (f" « {t} »" if t else "")
        if self.kind == "text":
            return f"texte au lieu de JSON{st} : « {_short(self.text)} »"
        if self.kind == "bad_json":
            return f"JSON invalide{st}"
        return f"JSON inattendu{st}"


def _short(text: str, n: int = 120) -> str:
    t = " ".join(RE_TAGS.sub(" ", text or "").split())
    t = mask_iban(RE_NIR.sub("***", t))
    return t if len(t) <= n else t[:n - 1] + "…"


def classify(content: bytes | str | None, content_type: str | None = None) -> Body:
    if content is None:
        content = b""
    if isinstance(content, bytes):
        text = content.decode("utf-8", errors="replace")
    else:
        text = content
    ct = (content_type or "").lower()
    stripped = text.strip().lstrip("\ufeff")
    if not stripped:
        return Body("empty", text="", content_type=content_type)
    low = stripped[:200].lower()
    if "html" in ct or low.startswith("<!doctype html") or low.startswith("<html") or (
            low.startswith("<") and ("<body" in stripped.lower()[:2000] or "<title" in stripped.lower()[:2000])):
        return Body("html", text=text, content_type=content_type)
    if stripped[0] in "[{" or "json" in ct or stripped in ("null", "true", "false") or _is_number(stripped):
        try:
            return Body("json", data=json.loads(stripped), text=text, content_type=content_type)
        except ValueError:
            return Body("bad_json", text=text, content_type=content_type)
    if stripped[0] == '"':
        try:
            return Body("json", data=json.loads(stripped), text=text, content_type=content_type)
        except ValueError:
            pass
    return Body("text", text=text, content_type=content_type)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _iban_masked(m: re.Match) -> str:
    compact = re.sub(r"\s", "", m[0]).upper()
    moved = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in moved)) % 97 != 1:
        return m[0]           # not an IBAN (a reference, a number that looks like one)
    return f"{compact[:4]} **** **** {compact[-3:]}"


def mask_iban(text: str) -> str:
    """Full IBANs in a text shown as ``FR76 **** **** 189``."""
    return RE_IBAN.sub(_iban_masked, text)


def mask(text: str) -> str:
    """Personal data out of a text a human reads or a raw body kept as proof: NIRs, birth
    dates, IBANs."""
    return mask_iban(RE_BIRTH.sub(r'\1"***"', RE_NIR.sub("***", text)))


def proof_body(content: bytes | str | None, secrets: Iterable[str] = ()) -> str:
    """The raw answer as kept in the proof: decoded, secrets and personal data masked, capped."""
    text = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else (content or "")
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = mask(text)
    return text if len(text) <= MAX_PROOF_BODY else text[:MAX_PROOF_BODY] + f"… [{len(text)} caractères]"


# ---- scalars -----------------------------------------------------------------------------
def scalar(v: Any) -> str | None:
    """A text value from whatever the OPCO put there (number, bool, {"code": ...}); None if empty."""
    if v is None:
        return None
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
    if isinstance(v, str):
        v = v.strip()
        return v or None
    if isinstance(v, dict):
        for k in ("code", "valeur", "value", "libelle", "label", "id"):
            if k in v:
                return scalar(v[k])
    return None


def first(d: dict, keys: Iterable[str]) -> Any:
    """The first non-empty value of ``keys`` in ``d``: exact names first, then any case."""
    for k in keys:
        if k in d and d[k] not in (None, "", [], {}):
            return d[k]
    lower = {str(k).lower(): v for k, v in d.items()}
    for k in keys:
        v = lower.get(k.lower())
        if v not in (None, "", [], {}):
            return v
    return None


def _field(d: dict, keys: tuple, lkeys: tuple, low: list) -> Any:
    """:func:`first` for :func:`read_state`, which reads seven fields of one item: the item's
    lower-cased copy is made at most once (``low``, a one-slot list), the keys' lower-cased
    names once for all (``lkeys``)."""
    for k in keys:
        if k in d and d[k] not in (None, "", [], {}):
            return d[k]
    lower = low[0]
    if lower is None:
        lower = low[0] = {str(k).lower(): v for k, v in d.items()}
    for k in lkeys:
        v = lower.get(k)
        if v not in (None, "", [], {}):
            return v
    return None


def _lowered(keys: tuple) -> tuple:
    return tuple(k.lower() for k in keys)


def norm_etat(v: Any) -> str | None:
    s = scalar(v)
    if s is None:
        return None
    s = s.upper().replace("-", "_").replace(" ", "_")
    return {"EN_COURS": "EN_COURS_INSTRUCTION", "ENGAGEE": "ENGAGE", "REFUSEE": "REFUSE", "ANNULEE": "ANNULE",
            "RECU": "TRANSMIS", "RECUE": "TRANSMIS", "RUPTURE": "RUPTU"}.get(s, s)


def int_or_none(v: Any) -> int | None:
    try:
        return int(float(scalar(v)))          # "12", 12, 12.0
    except (TypeError, ValueError):
        return None


# ---- dossier states --------------------------------------------------------------------
@dataclass
class DossierState:
    """A dossier as an OPCO reports it, under the norm's names whatever names it used."""
    numero_interne: str
    etat: str | None = None
    date_etat: str | None = None
    numero_deca: str | None = None
    numero_externe: str | None = None
    motifs: Any = None
    anomalies: Any = None
    raw: dict = field(default_factory=dict, repr=False)

    def as_item(self) -> dict:
        """The norm's item shape (``numeroInterne``, ``etat``, ``dateEtat``...), other fields kept."""
        out = {k: v for k, v in self.raw.items() if k not in ("numeroInterne", "etat", "dateEtat", "numeroDeca",
                                                             "numeroExterne", "motifs", "anomalies")}
        out.update(numeroInterne=self.numero_interne, etat=self.etat, dateEtat=self.date_etat,
                   numeroDeca=self.numero_deca, numeroExterne=self.numero_externe)
        if self.motifs is not None:
            out["motifs"] = self.motifs
        if self.anomalies is not None:
            out["anomalies"] = self.anomalies
        return out


def read_state(item: Any, numero_hint: str | None = None) -> DossierState | None:
    """A state item (any naming) → DossierState; None when it names no dossier."""
    if not isinstance(item, dict):
        return None
    d = item
    for k in NESTED_KEYS:       # {"dossier": {...}, "etat": ...}: fields may sit one level down
        if isinstance(item.get(k), dict):
            d = {**item[k], **{kk: vv for kk, vv in item.items() if kk != k}}
            break
    low: list = [None]
    numero = scalar(_field(d, NUMERO_KEYS, _NUMERO_L, low)) or numero_hint
    if not numero:
        return None
    etat = _field(d, ETAT_KEYS, _ETAT_L, low)
    if isinstance(etat, dict) and not scalar(etat):
        etat = None
    return DossierState(numero_interne=numero, etat=norm_etat(etat),
                        date_etat=scalar(_field(d, DATE_KEYS, _DATE_L, low)),
                        numero_deca=scalar(_field(d, DECA_KEYS, _DECA_L, low)),
                        numero_externe=scalar(_field(d, EXTERNE_KEYS, _EXTERNE_L, low)),
                        motifs=_field(d, MOTIFS_KEYS, _MOTIFS_L, low),
                        anomalies=_field(d, ANOMALIES_KEYS, _ANOMALIES_L, low), raw=dict(d))


_NUMERO_L, _ETAT_L, _DATE_L, _DECA_L, _EXTERNE_L, _MOTIFS_L, _ANOMALIES_L = map(_lowered, (
    NUMERO_KEYS, ETAT_KEYS, DATE_KEYS, DECA_KEYS, EXTERNE_KEYS, MOTIFS_KEYS, ANOMALIES_KEYS))


# ---- errors ------------------------------------------------------------------------------
def read_errors(body: Body | Any) -> list[dict]:
    """The OPCO's errors as the norm's ``[{code, champ, message}]``, from any shape."""
    if isinstance(body, Body):
        if body.kind == "text":
            return read_text_errors(body.text)
        if body.kind in ("html", "bad_json"):
            return [{"code": None, "champ": None, "message": body.describe()}]
        body = body.data
    if not isinstance(body, dict):
        return []
    for key in ERROR_KEYS:
        v = body.get(key)
        if v in (None, "", [], {}):
            continue
        items = v if isinstance(v, list) else [v]
        out = []
        for e in items:
            if isinstance(e, dict):
                out.append({"code": scalar(first(e, ("code", "codeErreur", "type", "error"))),
                            "champ": scalar(first(e, ("champ", "field", "path", "propriete", "loc"))),
                            "message": scalar(first(e, ("message", "libelle", "detail", "description", "msg")))})
            elif scalar(e):
                out.append({"code": None, "champ": None, "message": scalar(e)})
        if out:
            return out
    if body.get("message") or body.get("detail"):
        return [{"code": scalar(body.get("code")), "champ": None,
                 "message": scalar(body.get("message") or body.get("detail"))}]
    return []


RE_TEXT_ERROR = re.compile(r"^(?:(?:erreur|error)\s*\d*\s*:\s*)?(?:\[(?P<code>[\w.-]+)\]\s*)?"
                           r"(?:(?P<champ>[\w.\[\]]+)\s+:\s+)?(?P<message>.*)$", re.I | re.S)


def read_text_errors(text: str) -> list[dict]:
    """Errors written as plain text (« Erreur 422 : [CODE] champ : message ; ... »)."""
    t = " ".join(RE_TAGS.sub(" ", text or "").split())
    if not t:
        return []
    out = []
    for part in t.split(" ; ") if " ; " in t else [t]:
        m = RE_TEXT_ERROR.match(part.strip())
        if m and (m.group("code") or m.group("champ")):
            out.append({"code": m.group("code"), "champ": m.group("champ"), "message": _short(m.group("message"), 300)})
        else:
            out.append({"code": None, "champ": None, "message": _short(part, 300)})
    return out


def errors_text(errors: list[dict]) -> str:
    return "; ".join(" ".join(x for x in (f"{e.get('code') or ''} {e.get('champ') or ''}".strip() + ":",
                                          e.get("message") or "") if x).strip(" :")
                     for e in errors)


# ---- lists and pages ---------------------------------------------------------------------
def extract_list(data: Any, prefer: Iterable[str] = ()) -> list | None:
    """The items of a list answer, bare or wrapped; None when no list can be found."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        return None
    for k in (*prefer, *LIST_KEYS):
        v = data.get(k)
        if isinstance(v, list):
            return v
        if isinstance(v, dict):           # {"data": {"items": [...]}}
            inner = extract_list(v)
            if inner is not None and v is not data:
                return inner
    lists = [v for k, v in data.items() if k not in ERROR_KEYS and k not in ("inconnus", "absents")
             and isinstance(v, list) and (not v or isinstance(v[0], dict))]
    if len(lists) == 1:
        return lists[0]
    if read_state(data) is not None and first(data, ETAT_KEYS) is not None:   # one item, unwrapped
        return [data]
    return None


@dataclass
class PageRequest:
    """What to ask for the next page: a whole URL (next link) or query parameters."""
    url: str | None = None
    params: dict | None = None


def _link_header(value: str | None) -> str | None:
    if not value:
        return None
    for part in value.split(","):
        m = re.match(r'\s*<([^>]*)>(.*)', part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2), re.I):
            return m.group(1).strip()
    return None


def _deep_next(data: dict) -> Any:
    v = first(data, NEXT_KEYS)
    if v is None:
        links = data.get("_links") or data.get("links") or data.get("pagination") or {}
        if isinstance(links, dict):
            v = first(links, NEXT_KEYS)
        elif isinstance(links, list):   # [{"rel": "next", "href": ...}]
            for link in links:
                if isinstance(link, dict) and str(link.get("rel", "")).lower() in ("next", "suivant"):
                    v = link.get("href") or link.get("url")
    if isinstance(v, dict):
        v = v.get("href") or v.get("url")
    return v


def next_page(data: Any, headers: dict, request_url: str, base_url: str, params: dict, n_items: int,
              page_size: int) -> PageRequest | None:
    """The next page after an answer with ``n_items`` items, or None at the last page.
    ``params``: the query of the page just read (numeroPage/taillePage, offset/limit...)."""
    hdr = None
    for k, v in (headers or {}).items():
        if k.lower() == "link":
            hdr = _link_header(v)
    meta = data if isinstance(data, dict) else {}
    if isinstance(meta.get("pagination"), dict):
        meta = {**meta, **meta["pagination"]}
    if isinstance(meta.get("page"), dict):   # {"page": {"number":..,"size":..,"totalElements":..}}
        meta = {**meta, **meta["page"]}
    link = hdr or _deep_next(meta)
    if isinstance(link, str) and link.strip():
        url = urljoin(request_url, link.strip())
        if not url.startswith(("http://", "https://")) and "?" in link:   # a bare query string
            url = urljoin(request_url, "?" + link.split("?", 1)[1])
        return PageRequest(url=url)
    if n_items == 0:
        return None
    if n_items > page_size:
        return None                           # more than a page asked for: the OPCO does not page this route
    if any(k in meta for k in NEXT_KEYS):
        return None                           # next links are this OPCO's way, and there is none: last page
    total = int_or_none(first(meta, TOTAL_KEYS))
    if total is None:
        total = int_or_none(next((v for k, v in (headers or {}).items() if k.lower() in ("x-total-count", "x-total")),
                                 None))
    offset = int_or_none(first(meta, OFFSET_KEYS))
    if offset is not None or any(k in params for k in OFFSET_KEYS):
        if offset is None:
            offset = int_or_none(first(params, OFFSET_KEYS)) or 0
        limit = int_or_none(first(meta, LIMIT_KEYS)) or int_or_none(first(params, LIMIT_KEYS)) or page_size
        nxt = offset + n_items
        if (total is not None and nxt >= total) or (total is None and n_items < limit):
            return None
        p = {k: v for k, v in params.items() if k not in PAGE_KEYS}
        okey = next((k for k in OFFSET_KEYS if k in meta or k in params), "offset")
        lkey = next((k for k in LIMIT_KEYS if k in meta or k in params), "limit")
        p[okey], p[lkey] = nxt, limit
        return PageRequest(params=p)
    page = int_or_none(first(meta, PAGE_KEYS)) or int_or_none(first(params, PAGE_KEYS)) or 1
    size = int_or_none(first(meta, SIZE_KEYS)) or page_size
    pages = int_or_none(first(meta, PAGES_KEYS))
    zero_based = "number" in meta and "numeroPage" not in meta and pages is not None
    if pages is not None and (page + (1 if zero_based else 0)) >= pages:
        return None
    if total is not None and (page + (1 if zero_based else 0)) * size >= total:
        return None
    if total is None and pages is None and n_items < size:
        return None
    p = dict(params)
    pkey = next((k for k in PAGE_KEYS if k in params), "numeroPage")
    p[pkey] = page + 1
    return PageRequest(params=p)


def same_origin(url: str, base_url: str) -> bool:
    """A next link may only lead below the OPCO's API base (the key is sent with it)."""
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc) and a.path.startswith(b.path.rstrip("/") + "/")


def split_url(url: str, base_url: str) -> tuple[str, dict]:
    """(path below the base, query params) of a next link."""
    parts = urlsplit(url)
    base_path = urlsplit(base_url).path.rstrip("/")
    return parts.path[len(base_path):] or "/", dict(parse_qsl(parts.query, keep_blank_values=True))


# ---- whole answers -----------------------------------------------------------------------
def read_items(body: Body, status: int, opco: str, method: str, route: str, prefer: Iterable[str] = ()) -> list:
    """The items of a list answer (2xx); Unreadable when the body holds none."""
    if status == 204 and body.kind == "empty":
        return []                                   # "No Content": an empty list
    if body.kind != "json":
        raise Unreadable(opco, method, route, body.describe(status), status)
    items = extract_list(body.data, prefer)
    if items is None:
        errs = read_errors(body.data) if isinstance(body.data, dict) and any(
            body.data.get(k) for k in ERROR_KEYS) else []
        if errs:
            raise Unreadable(opco, method, route, f"réponse portant des erreurs : {errors_text(errs)}",
                             status)
        shape = type(body.data).__name__ if not isinstance(body.data, dict) else \
            "objet sans liste (" + ", ".join(sorted(map(str, body.data))[:6]) + ")"
        raise Unreadable(opco, method, route, f"aucune liste de dossiers dans la réponse : {shape}", status)
    return items


def read_states(items: list, opco: str, method: str, route: str, status: int | None = None) -> list[DossierState]:
    """Every item that names a dossier; Unreadable when items exist but none can be read."""
    out = [s for s in (read_state(i) for i in items) if s is not None]
    if items and not out:
        sample = items[0]
        what = ("champs " + ", ".join(sorted(map(str, sample))[:8])) if isinstance(sample, dict) else \
            type(sample).__name__
        raise Unreadable(opco, method, route, f"éléments sans numéro de dossier ({what})", status)
    return out


def read_list_answer(raw: bytes, content_type: str | None, status: int, opco: str | None, route_id: str,
                     prefer: Iterable[str] = ()) -> list[DossierState]:
    """A list route's 2xx answer → its dossier states (Unreadable when it cannot be read)."""
    method = ROUTES[route_id].method
    items = read_items(classify(raw, content_type), status, opco, method, route_id, prefer)
    return read_states(items, opco, method, route_id, status)


def refused(status: int, raw: bytes, content_type: str | None, errors: list[dict], opco: str | None,
            route_id: str) -> OpcoError:
    """A read route answered 4xx: the OPCO's words when it gave some, else Unreadable."""
    body = classify(raw, content_type)
    route = ROUTES[route_id]
    if body.kind in ("html", "empty", "bad_json") or not errors:
        return Unreadable(opco, route.method, route_id, body.describe(status))
    return OpcoError(f"{route.label} : demande refusée par l'{opco_label(opco)} (HTTP {status}) : "
                     f"{errors_text(errors)}")


class Pager:
    """Walks the pages of a list route whatever the OPCO's paging style (shared by both hooks):

        pager = Pager(opco, base_url, "etats_v2", params, page_size)
        while pager.more():
            resp = hook.request("GET", "etats_v2", params=pager.params, url=pager.url, read=...)
            pager.advance(resp.body, resp.headers, states)
    """

    def __init__(self, opco: str | None, base_url: str, route_id: str, params: dict, page_size: int,
                 max_pages: int = 100_000):
        self.opco, self.base, self.route_id = opco, base_url, route_id
        self.params: dict | None = dict(params)
        self.url: str | None = None
        self.page_size, self.max_pages = page_size, max_pages
        self.pages = 0
        self._done = False
        self._seen: set = set()

    def more(self) -> bool:
        if self._done:
            return False
        if self.pages >= self.max_pages:
            raise Unreadable(self.opco, "GET", self.route_id, f"plus de {self.max_pages} pages (pagination sans fin)")
        return True

    def advance(self, data: Any, headers: dict, states: list[DossierState], status: int | None = None) -> None:
        self.pages += 1
        sig = tuple(f"{getattr(st, 'numero_interne', None) or getattr(st, 'numero_facture', '')}\0{st.date_etat}"
                    for st in states[:3]) + (len(states),)
        if states and sig in self._seen:     # the OPCO ignores our paging: the same page again
            raise Unreadable(self.opco, "GET", self.route_id, "la même page revient (pagination non reconnue)",
                             status)
        self._seen.add(sig)
        following = self.url is not None
        request_url = self.url or (self.base + ROUTES[self.route_id].path)
        params = split_url(self.url, self.base)[1] if following else (self.params or {})
        nxt = next_page(data, headers, request_url, self.base, params, len(states), self.page_size)
        if nxt is None or (following and nxt.url is None):
            self._done = True     # last page (an OPCO paging by links gives no link on its last page)
        elif nxt.url:
            self.url, self.params = nxt.url, None
        else:
            self.params = nxt.params


def read_unknown(data: Any) -> list[str]:
    """Numbers the liste route declares unknown (``inconnus``, ``absents``, ``notFound``...)."""
    if not isinstance(data, dict):
        return []
    v = first(data, ("inconnus", "absents", "nonTrouves", "notFound", "unknown", "missing"))
    if isinstance(v, list):
        return [s for s in (scalar(x) if not isinstance(x, dict) else scalar(first(x, NUMERO_KEYS)) for x in v) if s]
    return []


# ---- payment schedules (échéances) ----------------------------------------------------------
ECHEANCES_KEYS = ("echeances", "echeancier", "echeancesFinancement", "schedule", "paiements")
ECHEANCE_NUM_KEYS = ("numero", "numeroEcheance", "numEcheance", "rang", "ordre", "id")
ECHEANCE_DATE_KEYS = ("dateEcheance", "date_echeance", "dateDebut", "dateDebutEcheance", "date")
ECHEANCE_FIN_KEYS = ("dateFin", "dateFinEcheance", "date_fin")
MONTANT_KEYS = ("montant", "montantEcheance", "montantTTC", "montantHT", "amount", "valeur")


@dataclass
class Echeance:
    """One échéance of a dossier's payment schedule, under the norm's names."""
    numero: int
    date_echeance: str | None = None
    date_fin: str | None = None
    montant: float | None = None
    etat: str | None = None


def money(v: Any) -> float | None:
    """An amount from a number or a text (« 1 234,50 », "1234.5"); None when not one."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return round(float(v), 2)
    s = scalar(v)
    if s is None:
        return None
    s = s.replace("\u00a0", "").replace(" ", "").replace("€", "").replace(",", ".")
    try:
        return round(float(s), 2)
    except ValueError:
        return None


def _day(v: Any) -> str | None:
    s = scalar(v)
    if not s:
        return None
    m = re.match(r"^(\d{4}-\d{2}-\d{2})", s)
    if m:
        return m.group(1)
    m = re.match(r"^(\d{2})/(\d{2})/(\d{4})$", s)
    return f"{m.group(3)}-{m.group(2)}-{m.group(1)}" if m else None


def _code(v: Any) -> str | None:
    """A state code as written (« à facturer » → A_FACTURER), without the dossier states' synonyms."""
    s = scalar(v)
    return s.upper().replace("-", "_").replace(" ", "_").replace("À", "A") if s else None


def read_echeances(data: Any, numero: str, opco: str | None = None,
                   route: str = "dossier_read_v2") -> list[Echeance] | Unreadable:
    """The échéances of dossier ``numero`` in a dossier answer (``GET /v2/dossiers?numeroInterne=``):
    the dossier bare or wrapped (``dossier``, ``data``, a one-item list...), its schedule under
    ``echeances`` or a renamed key, each échéance's number, date, amount and state under the
    norm's names or renamed ones. An :class:`Unreadable` (returned, never raised) when no
    schedule can be found or an échéance has no number or amount."""
    method = ROUTES[route].method if route in ROUTES else "GET"
    d = data
    if isinstance(d, list):
        d = next((x for x in d if isinstance(x, dict) and (read_state(x) or DossierState("")).numero_interne == numero),
                 d[0] if len(d) == 1 else None)
    if isinstance(d, dict):
        for k in NESTED_KEYS:
            if isinstance(d.get(k), dict) and first(d, ECHEANCES_KEYS) is None:
                d = {**d[k], **{kk: vv for kk, vv in d.items() if kk != k}}
                break
    if not isinstance(d, dict):
        return Unreadable(opco, method, route, f"pas de dossier {numero} dans la réponse", numero_interne=numero)
    items = None
    for k in ECHEANCES_KEYS:
        v = d.get(k) if k in d else {str(kk).lower(): vv for kk, vv in d.items()}.get(k.lower())
        if isinstance(v, dict):
            v = extract_list(v)
        if isinstance(v, list):
            items = v
            break
    if items is None:
        if any(k in d for k in ECHEANCES_KEYS):        # "echeances": null — an engaged dossier with no schedule yet
            return []
        return Unreadable(opco, method, route, f"pas d'échéancier dans le dossier {numero} (champs "
                          + ", ".join(sorted(map(str, d))[:8]) + ")", numero_interne=numero)
    out: list[Echeance] = []
    for i, e in enumerate(items, 1):
        if not isinstance(e, dict):
            return Unreadable(opco, method, route, f"échéance illisible ({type(e).__name__})", numero_interne=numero)
        num = int_or_none(first(e, ECHEANCE_NUM_KEYS))
        amount = money(first(e, MONTANT_KEYS))
        if amount is None:
            return Unreadable(opco, method, route, f"échéance {num or i} sans montant lisible", numero_interne=numero)
        out.append(Echeance(numero=num if num is not None else i, date_echeance=_day(first(e, ECHEANCE_DATE_KEYS)),
                            date_fin=_day(first(e, ECHEANCE_FIN_KEYS)), montant=amount,
                            etat=_code(first(e, ("etat", "etatEcheance", "statut", "status")))))
    if len({e.numero for e in out}) != len(out):
        return Unreadable(opco, method, route, "numéros d'échéance en double", numero_interne=numero)
    return out


# ---- invoices (factures) ------------------------------------------------------------------
FACTURE_NUM_KEYS = ("numeroInterneFacture", "numeroFacture", "numero_facture", "referenceFacture", "numero")
FACTURE_ETAT_KEYS = ("etatFacture", "statutFacture", "etat", "statut", "status")


# an invoice's state, whatever the OPCO's word for it (the norm knows REGLE; the project's
# convention adds EN_COURS and REJETE, docs/api-conventions.md)
FACTURE_ETATS = {"REGLE": "REGLE", "REGLEE": "REGLE", "PAYE": "REGLE", "PAYEE": "REGLE", "PAID": "REGLE",
                 "SOLDE": "REGLE", "SOLDEE": "REGLE",
                 "REJETE": "REJETE", "REJETEE": "REJETE", "REFUSE": "REJETE", "REFUSEE": "REJETE",
                 "REJECTED": "REJETE", "ANNULE": "REJETE", "ANNULEE": "REJETE",
                 "EN_COURS": "EN_COURS", "RECUE": "EN_COURS", "RECU": "EN_COURS", "A_TRAITER": "EN_COURS",
                 "EN_ATTENTE": "EN_COURS", "TRANSMISE": "EN_COURS", "EN_COURS_DE_TRAITEMENT": "EN_COURS",
                 "VALIDEE": "EN_COURS", "VALIDE": "EN_COURS", "A_PAYER": "EN_COURS", "MISE_EN_PAIEMENT": "EN_COURS"}
MONTANT_REGLE_KEYS = ("montantRegle", "montantPaye", "montantReglement", "montantVerse", "montantPaiement")
MOTIFS_REJET_KEYS = ("motifsRejet", "motifs", "erreurs", "anomalies")


@dataclass
class FactureState:
    """An invoice as an OPCO reports it (``/v2/factures/etats``), under the norm's names.

    ``etat`` is the OPCO's word as written (upper case), ``etat_norm`` its meaning: REGLE,
    EN_COURS, REJETE, or None when the word is unknown (shown as it is, never guessed).
    ``montant_regle`` is what was actually paid: ``montantRegle`` (or a renamed key), else the
    sum of ``dossiers[].montant`` when paid, else the invoiced amount when paid."""
    numero_facture: str
    etat: str | None = None
    date_etat: str | None = None
    montant: float | None = None
    reference_virement: str | None = None
    date_reglement: str | None = None
    commentaire: str | None = None
    montant_regle: float | None = None
    motifs: list | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def etat_norm(self) -> str | None:
        return FACTURE_ETATS.get(self.etat or "")


def read_facture_state(item: Any) -> FactureState | None:
    """An invoice state item (any naming) → FactureState; None when it names no invoice."""
    if not isinstance(item, dict):
        return None
    num = scalar(first(item, FACTURE_NUM_KEYS))
    if not num:
        return None
    etat = _code(first(item, FACTURE_ETAT_KEYS))
    montant = money(first(item, ("montantFacture", "montant", "montantTTC")))
    regle = money(first(item, MONTANT_REGLE_KEYS))
    if regle is None and FACTURE_ETATS.get(etat or "") == "REGLE":
        lines = item.get("dossiers")
        parts = [money(x.get("montant")) for x in lines if isinstance(x, dict)] if isinstance(lines, list) else []
        regle = round(sum(parts), 2) if parts and None not in parts else montant
    motifs = first(item, MOTIFS_REJET_KEYS)
    return FactureState(numero_facture=num, etat=etat,
                        date_etat=scalar(first(item, DATE_KEYS)), montant=montant,
                        reference_virement=scalar(first(item, ("referenceVirement", "refVirement", "referencePaiement"))),
                        date_reglement=_day(first(item, ("dateReglement", "datePaiement", "dateVirement"))),
                        commentaire=scalar(first(item, ("commentaire", "message", "motif"))),
                        montant_regle=regle, motifs=motifs if isinstance(motifs, list) and motifs else None,
                        raw=dict(item))


def read_facture_states(raw: bytes, content_type: str | None, status: int, opco: str | None) -> list[FactureState]:
    """A ``/v2/factures/etats`` 2xx answer → its invoice states (Unreadable when it cannot be read)."""
    items = read_items(classify(raw, content_type), status, opco, "GET", "factures_etats_v2", ("factures",))
    out = [s for s in (read_facture_state(i) for i in items) if s is not None]
    if items and not out:
        raise Unreadable(opco, "GET", "factures_etats_v2", "éléments sans numéro de facture", status)
    return out
