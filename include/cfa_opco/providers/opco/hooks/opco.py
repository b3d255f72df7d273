"""OpcoHook: one CFA key (one OPCO × one SIREN) on the API CFA-OPCO.

    hook = OpcoHook("opco_akto_775672272", software={"editeur": ..., "logiciel": ..., "version": ...},
                    proof_sink=ProofRecorder(connector), run_id=run_id)
    resp = hook.send_dossier(payload)          # OpcoResponse: status, body, erreurs, numero_deca...

Connection (type http): host = base URL ending in /ApiEchangeCFA, password = the key,
extra: siren, rate_limit_per_second (optional), proxy (optional, http://[user:pw@]host:port),
connect_timeout / read_timeout (seconds, default 3 / 5: a held answer is not waited for),
and for AKTO oauth_client_id, oauth_client_secret, oauth_token_path (or oauth_token_url).
Parsed by :func:`..connections.parse_connection`, shared with the async twin.

Answers are read by :mod:`..reading` (lists bare or wrapped, any pagination style, renamed
fields, text/HTML/empty bodies); what cannot be understood raises :class:`..reading.Unreadable`
(French, naming the OPCO and the route) and its raw body is kept in the proof.

Sending without blocking: :meth:`OpcoHook.send_once` makes ONE attempt and returns a
:class:`..outcomes.SendOutcome` (CREATED, REJECTED, RETRY_LATER with retry_after, AMBIGUOUS,
UNREADABLE); :meth:`OpcoHook.find_dossiers` settles an AMBIGUOUS one through any read route.

Policy of :meth:`OpcoHook.request` (and send_dossier, the reads...): 4xx (400/404/409/422...) are returned with the OPCO's ``erreurs`` (never raised, never
retried); 401/403 raise OpcoAuthError; 429 waits Retry-After in the refused request's
thread and slows the pacing (all threads of the key pause only on 429s in a row: real rate
limiting, see :class:`Pacer`); 5xx, timeouts and dropped connections retry with exponential backoff
and full jitter up to ``max_attempts`` then raise OpcoUnavailable. Every attempt — answered or
not — is handed to ``proof_sink`` as an ExchangeRecord. No key, token or body is ever logged.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urlsplit

from airflow.sdk import BaseHook
from urllib3 import encode_multipart_formdata

from ..capabilities import Capabilities
from ..connections import ConnInfo, airflow_connection, parse_connection
from ..exceptions import OpcoAuthError, OpcoError, OpcoRouteNotServed, OpcoUnavailable
from ..norm import CONN_TYPE, FIRST_PAGE, KEY_SCOPE_ERRORS, LISTE_MAX, ROUTES, opco_label, parse_conn_id
from ..proofs import ExchangeRecord, canonical_json, sha256_hex, utcnow
from .. import reading
from ..outcomes import SendKind, SendOutcome, classify_answer, classify_no_answer, suggested_delay
from ..reading import DossierState, Unreadable
from ..transport import Transport, TransportError, TransportTimeout

log = logging.getLogger(__name__)

PACING_MARGIN = 0.95          # pace at 95 % of the allowed rate: no 429 from clock jitter
TOKEN_ERRORS = ("JETON_EXPIRE", "JETON_INVALIDE", "JETON_ABSENT")
RE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass
class OpcoResponse:
    """An answer of the OPCO (2xx, or a 4xx other than 401/403 with its ``erreurs``)."""
    status: int
    body: Any = field(default=None, repr=False)      # parsed JSON (may carry personal data)
    headers: dict = field(default_factory=dict, repr=False)
    erreurs: list = field(default_factory=list)
    numero_externe: str | None = None
    numero_deca: str | None = None
    etat: str | None = None
    date_etat: str | None = None
    route_id: str | None = None
    attempts: int = 1
    raw: bytes = field(default=b"", repr=False)      # the body as received
    content_type: str | None = None
    body_kind: str | None = None                     # json, empty, text, html, bad_json (reading.classify)
    read: Any = field(default=None, repr=False)      # what the route's reader made of it

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_text(self) -> str:
        return reading.errors_text(self.erreurs)


class Pacer:
    """Client-side pacing for one key, shared by every thread and hook using that key.
    Slots are reserved one after the other (GCRA, no burst): at ``rate`` req/s the server's
    token bucket never runs dry. A single 429 only slows the rate (recovered slowly on
    success): its Retry-After is honoured by the refused request alone, so a random 429 does
    not idle the key. 429s in a row (``PAUSE_AFTER``, with no success in between: real rate
    limiting) pause everybody until Retry-After. ``rate=None``: no pacing, pauses only."""

    PAUSE_AFTER = 4

    def __init__(self, rate: float | None):
        self.lock = threading.Lock()
        self.configured = rate
        self.rate = rate
        self.next_free = 0.0
        self.pause_until = 0.0
        self.consecutive_429 = 0

    def configure(self, rate: float | None) -> None:
        with self.lock:
            if rate != self.configured:
                self.configured = self.rate = rate

    def acquire(self) -> float:
        if not self.rate and time.monotonic() >= self.pause_until:
            return 0.0        # no pacing, no pause: nothing to reserve (the common case, lock-free)
        with self.lock:
            now = time.monotonic()
            start = max(now, self.pause_until)
            if self.rate:
                start = max(start, self.next_free)
                self.next_free = start + 1.0 / (self.rate * PACING_MARGIN)
        wait = start - now
        if wait > 0:
            time.sleep(wait)
        return wait

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when the key may send)."""
        if time.monotonic() >= self.pause_until:
            return 0.0
        with self.lock:
            return max(0.0, self.pause_until - time.monotonic())

    def rate_limited(self, seconds: float) -> bool:
        """A 429 with Retry-After ``seconds``: slows the rate; pauses the whole key only when
        429s come in a row. True when the key was paused."""
        with self.lock:
            self.consecutive_429 += 1
            if self.rate and self.configured:
                self.rate = max(self.configured * 0.5, self.rate * 0.8)
            if self.consecutive_429 < self.PAUSE_AFTER:
                return False
            now = time.monotonic()
            self.pause_until = max(self.pause_until, now + seconds)
            self.next_free = max(self.next_free, self.pause_until)
        return True

    def success(self) -> None:
        if self.consecutive_429:
            with self.lock:
                self.consecutive_429 = 0
        if self.rate and self.configured and self.rate < self.configured:
            with self.lock:
                self.rate = min(self.configured, self.rate * 1.02)


_PACERS: dict[str, Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(key: str, base_url: str, rate: float | None) -> Pacer:
    ident = hashlib.sha256(f"{base_url}\0{key}".encode()).hexdigest()[:24]   # never the key itself
    with _PACERS_LOCK:
        p = _PACERS.get(ident)
        if p is None:
            p = _PACERS[ident] = Pacer(rate)
        else:
            p.configure(rate)
        return p


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None


def _iso(d: dt.datetime) -> str:
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.isoformat()


def etats_pager(opco_code: str, base_url: str, date_debut: dt.datetime, date_fin: dt.datetime | None,
                page_size: int, max_pages: int) -> "reading.Pager":
    """The pager over the v2 etats window [date_debut, date_fin) — for both hooks."""
    params = {"numeroPage": FIRST_PAGE, "taillePage": page_size, "dateDebut": _iso(date_debut)}
    if date_fin is not None:
        params["dateFin"] = _iso(date_fin)
    return reading.Pager(opco_code, base_url, "etats_v2", params, page_size, max_pages)


def prepare_request(info: ConnInfo | None, caps: Capabilities, method: str, route_id: str, params: dict | None,
                    json_body: Any = None, files: dict | None = None, form: dict | None = None,
                    encoded: bytes | None = None, url: str | None = None) -> dict:
    """Everything of one API call but the sending (shared by OpcoHook and AsyncOpcoHook): the
    route checked against the norm's table and the OPCO's capabilities, URL, proof route,
    headers, body and its hash. ``url``: a next-page link of the OPCO (same origin only)."""
    if route_id not in ROUTES:
        raise ValueError(f"route inconnue : {route_id}")
    r_method, path = ROUTES[route_id].method, ROUTES[route_id].path
    if method.upper() != r_method:
        raise ValueError(f"{route_id} est une route {r_method}, pas {method.upper()}")
    if not caps.serves(route_id):
        raise OpcoRouteNotServed(caps.code, route_id)
    if url is not None:          # a next-page link given by the OPCO: only below its API base
        if not reading.same_origin(url, info.base):
            raise Unreadable(info.code, r_method, route_id, "lien de page suivante hors de l'API de l'OPCO "
                             "(non suivi : la clé ne part que vers l'adresse de la connexion)")
        path, params = reading.split_url(url, info.base)
    qs = urlencode({k: v for k, v in params.items() if v is not None}, safe=",:") if params else ""
    proof_route = path + (f"?{qs}" if qs else "")
    headers = info.headers()
    data, req_sha, upload = None, None, None
    if json_body is not None:
        data = encoded if encoded is not None else canonical_json(json_body)
        req_sha = sha256_hex(data)
        headers["Content-Type"] = "application/json; charset=utf-8"
    elif files is not None or form is not None:
        data = dict(form or {})
        upload = files
        meta = {"form": data, "files": {name: {"filename": f[0], "mime": f[2] if len(f) > 2 else None,
                                               "sha256": sha256_hex(f[1]), "size": len(f[1])}
                                        for name, f in (files or {}).items()}}
        req_sha = sha256_hex(canonical_json(meta))
    return {"method": method.upper(), "url": info.base + proof_route, "proof_route": proof_route,
            "headers": headers, "data": data, "upload": upload, "req_sha": req_sha,
            "needs_token": caps.needs_token(route_id)}


def make_response(route_id: str, status: int, headers: dict, content: bytes, attempt: int,
                  parsed: reading.Body | None = None) -> OpcoResponse:
    """An OpcoResponse from an HTTP answer, read by :mod:`..reading` (shared by both hooks)."""
    ctype = next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), None)
    parsed = parsed if parsed is not None else reading.classify(content, ctype)
    body = parsed.data if parsed.is_json else None
    errs = parsed.errors()
    st = parsed.state()
    return OpcoResponse(status=status, body=body, headers=dict(headers or {}), erreurs=errs,
                        numero_externe=st.numero_externe if st else None,
                        numero_deca=st.numero_deca if st else None, etat=st.etat if st else None,
                        date_etat=st.date_etat if st else None, route_id=route_id, attempts=attempt,
                        raw=content or b"", content_type=ctype, body_kind=parsed.kind)


def retry_unreadable(method: str, resp: OpcoResponse) -> bool:
    """A read (GET) answered 2xx with an HTML page or a broken body: transient (a gateway or a
    maintenance page), worth reading again within the attempt budget."""
    return method == "GET" and resp.body_kind in ("html", "bad_json", "empty") and resp.status != 204


def scrub(text: str, secrets) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:500]


def answer_record(info: ConnInfo, run_id: str | None, method: str, proof_route: str, numero_interne: str | None,
                  attempt: int, sent_at: dt.datetime, request_sha256: str | None, status: int, content: bytes,
                  content_type: str | None, parsed: reading.Body, secrets, is_token: bool = False) -> ExchangeRecord:
    """The proof of an answered attempt (shared by both hooks): the raw body is kept, masked,
    when it is not JSON, an error, or carries ``erreurs``; never for a token answer."""
    st = parsed.state()
    errs = parsed.errors()
    keep_raw = (not is_token) and (not parsed.is_json or status >= 400 or bool(errs))
    err = scrub(_erreurs_text({"erreurs": errs}), secrets) or None
    return ExchangeRecord(conn_id=info.conn_id, opco_code=info.code, cfa_siren=info.siren, run_id=run_id,
                          method=method, route=proof_route, numero_interne=numero_interne, attempt=attempt,
                          sent_at=sent_at, request_sha256=request_sha256, received_at=utcnow(), http_status=status,
                          error=(err or f"HTTP {status}") if status >= 400 else err,
                          numero_externe=st.numero_externe if st else None,
                          numero_deca=st.numero_deca if st else None,
                          response_sha256=sha256_hex(content or b""),
                          response_body=reading.proof_body(content, secrets) if keep_raw else None,
                          content_type=content_type)


def no_answer_record(info: ConnInfo, run_id: str | None, method: str, proof_route: str, numero_interne: str | None,
                     attempt: int, sent_at: dt.datetime, request_sha256: str | None, error: str) -> ExchangeRecord:
    return ExchangeRecord(conn_id=info.conn_id, opco_code=info.code, cfa_siren=info.siren, run_id=run_id,
                          method=method, route=proof_route, numero_interne=numero_interne, attempt=attempt,
                          sent_at=sent_at, request_sha256=request_sha256, received_at=None, http_status=None,
                          error=error)


class OpcoHook(BaseHook):
    conn_name_attr = "opco_conn_id"
    default_conn_name = "opco_default"
    conn_type = CONN_TYPE
    hook_name = "OPCO (API CFA-OPCO)"

    def __init__(self, opco_conn_id: str = default_conn_name, *, software: dict | None = None,
                 timeout: float | tuple | None = None, max_attempts: int = 6, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, rate_limit_per_second: float | None = None,
                 proof_sink: Callable[[ExchangeRecord], None] | None = None, run_id: str | None = None,
                 max_rate_limited: int | None = None, capabilities: Capabilities | None = None):
        super().__init__()
        self._caps_override = capabilities   # the routes this OPCO serves, when not the table's
        self.opco_conn_id = opco_conn_id
        self._software_arg = software
        self.timeout = timeout
        self.max_attempts = max(1, int(max_attempts))
        self.max_rate_limited = max_rate_limited if max_rate_limited is not None else 5 * self.max_attempts
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._rate_arg = rate_limit_per_second
        self.proof_sink = proof_sink
        self.run_id = run_id
        code, siren = parse_conn_id(opco_conn_id)
        self.opco_code: str | None = code
        self.siren: str | None = siren
        self._conn_lock = threading.Lock()
        self._info: dict | None = None
        self._transport = None
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats: Counter = Counter()
        self._in_keyinfo = threading.local()
        self._tls = threading.local()

    # ---- connection -------------------------------------------------------------
    def _conn_info(self) -> ConnInfo:
        if self._info is not None:
            return self._info
        with self._conn_lock:
            if self._info is not None:
                return self._info
            conn = airflow_connection(self.opco_conn_id)   # cached: threads cannot fetch it
            info = parse_connection(conn, self.opco_conn_id, software=self._software_arg, rate=self._rate_arg,
                                    timeout=self.timeout)
            info.pacer = pacer_for(info.key, info.base, info.rate)
            if self._caps_override is not None:
                info.caps = self._caps_override
            self.opco_code, self.siren = info.code, info.siren
            self._info = info
            return self._info

    @property
    def capabilities(self) -> Capabilities:
        if self._caps_override is not None:
            return self._caps_override
        if self._info is None and self.opco_code:
            return Capabilities.for_opco(self.opco_code)
        return self._conn_info()["caps"]

    @property
    def base_url(self) -> str:
        return self._conn_info()["base"]

    def get_conn(self) -> Transport:
        """The hook's HTTP transport: thread-safe, one keep-alive connection per thread
        (see :mod:`..transport` for why not requests)."""
        if self._transport is None:
            proxy = self._conn_info()["proxy"]
            with self._conn_lock:
                if self._transport is None:
                    info = self._conn_info()
                    self._transport = Transport((info.connect_timeout, info.read_timeout), proxy=proxy)
        return self._transport

    def close(self) -> None:
        with self._conn_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def __enter__(self) -> "OpcoHook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict:
        return {"hidden_fields": ["schema", "login", "port"],
                "relabeling": {"host": "URL de base (…/ApiEchangeCFA)", "password": "Clé API (X-API-KEY)"},
                "placeholders": {"host": "https://api.opco.example/ApiEchangeCFA",
                                 "extra": json.dumps({"siren": "775672272", "rate_limit_per_second": 8})}}

    # ---- internals ----------------------------------------------------------------
    def _bump(self, *keys: str) -> None:
        with self._stats_lock:
            for k in keys:
                self.stats[k] += 1

    @property
    def request_count(self) -> int:
        """HTTP attempts made by this hook (token requests included)."""
        return self.stats["attempts"]

    def _backoff(self, failures: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** (failures - 1))))

    def _scrub(self, text: str) -> str:
        return scrub(text, (*((self._info.secrets()) if self._info else ()), (self._token or ("",))[0]))

    def _exchange(self, method: str, url: str, proof_route: str, *, headers: dict, data=None, files=None,
                  numero_interne: str | None, request_sha256: str | None, attempt: int, defer: bool = False,
                  is_token: bool = False):
        """One HTTP attempt. Returns (response, parsed JSON body or None, None, record) or
        (None, None, error text, record) — ``error`` is the TransportError's text and the
        exception is kept on ``self._last_transport_error`` (thread-local). The proof is recorded
        here, unless ``defer`` and the answer is a 2xx: the caller reads it first (an unreadable
        answer's raw body goes into the proof), then records it with :meth:`_record_rec`."""
        sent_at = utcnow()
        self._bump("attempts")
        if files:
            fields = dict(data or {})
            fields.update({name: tuple(f) for name, f in files.items()})
            data, ctype = encode_multipart_formdata(fields)
            headers = {**headers, "Content-Type": ctype}
        elif isinstance(data, dict):    # a form (OAuth2 token)
            data = urlencode(data).encode()
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        info = self._conn_info()
        try:
            resp = self.get_conn().request(method, url, body=data, headers=headers)
        except TransportError as exc:
            kind = "timeout" if isinstance(exc, TransportTimeout) else "connection"
            err = f"{kind}: {type(exc).__name__}" + ("" if exc.sent else " (requête non envoyée)")
            self._tls.last_transport_error = exc
            self._bump(f"error_{kind}")
            self._record_rec(no_answer_record(info, self.run_id, method, proof_route, numero_interne, attempt,
                                              sent_at, request_sha256, err))
            return None, None, err, None
        self._tls.last_transport_error = None
        ctype = resp.header("Content-Type")
        parsed = reading.classify(resp.data, ctype)
        self._bump(f"status_{resp.status}")
        rec = answer_record(info, self.run_id, method, proof_route, numero_interne, attempt, sent_at, request_sha256,
                            resp.status, resp.data, ctype, parsed, self._secrets(), is_token=is_token)
        resp.parsed = parsed
        if defer and 200 <= resp.status < 300:
            return resp, parsed.data if parsed.is_json else None, None, rec
        self._record_rec(rec)
        return resp, parsed.data if parsed.is_json else None, None, None

    def _secrets(self) -> tuple:
        return (*self._conn_info().secrets(), (self._token or ("",))[0])

    def _proof_body(self, content: bytes | None) -> str:
        return reading.proof_body(content, self._secrets())

    def _record_rec(self, rec: ExchangeRecord | None) -> None:
        if rec is None or self.proof_sink is None:
            return
        try:
            self.proof_sink(rec)
        except Exception as exc:  # a proof store outage must be loud, but not lose the OPCO's answer
            log.error("proof of exchange not recorded (%s %s): %s", rec.method, rec.route, type(exc).__name__)

    def _token_value(self, force: bool = False, max_attempts: int | None = None) -> str:
        info = self._conn_info()
        with self._token_lock:
            if not force and self._token and time.monotonic() < self._token[1]:
                return self._token[0]
            if not info["token_url"] or not info["client_id"]:
                raise OpcoAuthError(info["code"], info["siren"], None,
                                    "oauth_client_id / oauth_token_path absents de la connexion",
                                    conn_id=self.opco_conn_id, code="OAUTH")
            route = urlsplit(info["token_url"]).path
            form = {"grant_type": "client_credentials", "client_id": info["client_id"],
                    "client_secret": info["client_secret"] or ""}
            failures = attempt = 0
            while True:
                attempt += 1
                info["pacer"].acquire()
                resp, body, err, _ = self._exchange("POST", info["token_url"], route,
                                                    headers={"Accept": "application/json"}, data=form,
                                                    numero_interne=None, request_sha256=None, attempt=attempt,
                                                    is_token=True)
                status = resp.status if resp is not None else None
                if status is not None and status < 300 and isinstance(body, dict) and body.get("access_token"):
                    lifetime = float(body.get("expires_in") or 3600)
                    margin = min(60.0, lifetime * 0.1)       # renew shortly before expiry
                    self._token = (str(body["access_token"]), time.monotonic() + lifetime - margin)
                    self._bump("tokens")
                    return self._token[0]
                if status in (400, 401, 403):
                    bd = body if isinstance(body, dict) else {}
                    raise OpcoAuthError(info["code"], info["siren"], status,
                                        self._scrub(str(bd.get("error_description") or bd.get("error") or "refus")),
                                        conn_id=self.opco_conn_id, code="CLIENT_INVALIDE")
                failures += 1
                if failures >= (max_attempts or self.max_attempts):
                    raise OpcoUnavailable(info["code"], "oauth_token", attempt, err or f"HTTP {status}")
                time.sleep(self._backoff(failures))

    def _auth_error(self, status: int, body: Any) -> OpcoAuthError:
        info = self._conn_info()
        errs = (body or {}).get("erreurs") if isinstance(body, dict) else None
        first = (errs or [{}])[0] if isinstance(errs, list) else {}
        message = self._scrub(str(first.get("message") or ""))
        code = first.get("code")
        expires = None
        m = RE_DATE.search(message)
        if m and ("expir" in message.lower() or code == "CLE_EXPIREE"):
            expires = m.group(1)
        elif status == 403 and code not in KEY_SCOPE_ERRORS and not getattr(self._in_keyinfo, "on", False):
            try:
                ki = self.key_info()
                comment = str(ki.get("comment") or "")
                if ki.get("status") != "success" and "expir" in comment.lower():
                    expires = ki.get("dateFinValidite")
                    code = code or "CLE_EXPIREE"
            except Exception:
                pass
        return OpcoAuthError(info["code"], info["siren"], status, message, expires, conn_id=self.opco_conn_id,
                             code=code)

    # ---- the one entry point ------------------------------------------------------
    def _prepare(self, method: str, route_id: str, params: dict | None, json_body: Any, files: dict | None,
                 form: dict | None, encoded: bytes | None, url: str | None) -> dict:
        caps = self.capabilities
        if route_id in ROUTES and not caps.serves(route_id):
            self._bump("not_served")
            raise OpcoRouteNotServed(caps.code, route_id)
        info = self._conn_info() if route_id in ROUTES else None
        return prepare_request(info, caps, method, route_id, params, json_body, files, form, encoded, url)

    def _response(self, route_id: str, resp, body: Any, attempt: int) -> OpcoResponse:
        return make_response(route_id, resp.status, resp.headers, resp.data, attempt, getattr(resp, "parsed", None))

    def request(self, method: str, route_id: str, *, params: dict | None = None, json_body: Any = None,
                files: dict | None = None, form: dict | None = None, numero_interne: str | None = None,
                encoded: bytes | None = None, max_attempts: int | None = None, url: str | None = None,
                read: Callable[[OpcoResponse], Any] | None = None) -> OpcoResponse:
        """One call of ``route_id`` (a key of ROUTES), retried as the policy above says.
        ``encoded``: ``canonical_json(json_body)`` when the caller already holds it.
        ``max_attempts``: this call's limit (default: the hook's). ``url``: a next-page link the
        OPCO gave (same origin as the base URL only). ``read``: applied to a 2xx answer before its
        proof is recorded; its result is ``response.read``; an :class:`Unreadable` it raises puts
        the raw body in the proof, then propagates."""
        prep = self._prepare(method, route_id, params, json_body, files, form, encoded, url)
        info = self._conn_info()
        limit = max(1, int(max_attempts)) if max_attempts else self.max_attempts
        pacer: Pacer = info.pacer
        self._bump("requests")
        attempt = failures = limited = 0
        renewed = False
        last_err = ""
        while True:
            attempt += 1
            headers = dict(prep["headers"])
            if prep["needs_token"]:
                headers["Authorization"] = f"Bearer {self._token_value()}"
            pacer.acquire()
            resp, body, err, rec = self._exchange(prep["method"], prep["url"], prep["proof_route"], headers=headers,
                                                  data=prep["data"], files=prep["upload"],
                                                  numero_interne=numero_interne, request_sha256=prep["req_sha"],
                                                  attempt=attempt, defer=read is not None)
            status = resp.status if resp is not None else None
            if status == 429:
                limited += 1
                wait = parse_retry_after(resp.header("Retry-After"))
                wait = min(wait if wait is not None else self._backoff(limited + 1), 300.0)
                paused = pacer.rate_limited(wait)     # the whole key only on 429s in a row
                last_err = "HTTP 429"
                self._bump("rate_limited")
                log.warning("OPCO %s %s: HTTP 429, %s %.2fs (attempt %d)", info.code, route_id,
                            "clé en pause" if paused else "nouvel essai dans", wait, attempt)
                if limited > (5 * limit if max_attempts else self.max_rate_limited):
                    raise OpcoUnavailable(info.code, route_id, attempt, "HTTP 429 répétés (limite de débit)")
                if not paused:
                    time.sleep(wait)                  # Retry-After honoured by this request
                continue
            if status is None or status >= 500:
                failures += 1
                last_err = err or f"HTTP {status}" + (f" ({resp.parsed.describe()})"
                                                      if resp is not None and not resp.parsed.is_json else "")
                if failures >= limit:
                    self._bump("unavailable")
                    raise OpcoUnavailable(info.code, route_id, attempt, last_err)
                delay = self._backoff(failures)
                self._bump("retries")
                log.warning("OPCO %s %s: %s, retry in %.2fs (attempt %d/%d)", info.code, route_id, last_err,
                            delay, failures, limit)
                time.sleep(delay)
                continue
            if status == 401 and prep["needs_token"] and not renewed and _first_code(body) in TOKEN_ERRORS:
                renewed = True
                self._token_value(force=True)
                self._bump("token_renewed")
                continue
            if status in (401, 403):
                raise self._auth_error(status, body)
            pacer.success()
            out = self._response(route_id, resp, body, attempt)
            if status >= 400:
                log.info("OPCO %s %s: HTTP %s (%d erreur(s))", info.code, route_id, status, len(out.erreurs))
            if rec is not None:
                try:
                    out.read = read(out)
                except Unreadable as u:
                    rec.response_body = rec.response_body or self._proof_body(resp.data)
                    rec.error = self._scrub(str(u))
                    self._bump("unreadable")
                    if retry_unreadable(prep["method"], out) and failures + 1 < limit:
                        failures += 1           # a gateway or maintenance page on a read: read again later
                        self._record_rec(rec)
                        rec = None
                        time.sleep(self._backoff(failures))
                        continue
                    raise
                finally:
                    self._record_rec(rec)
            return out

    # ---- routes ----------------------------------------------------------------------
    def send_dossier(self, payload: dict, *, encoded: bytes | None = None) -> OpcoResponse:
        """POST the dossier on v2 when the OPCO serves it, else v1 (OpcoRouteNotServed when neither).
        ``encoded``: the payload's canonical JSON, when already built (it is what is hashed and sent)."""
        route = self.capabilities.contract_route()
        if route is None:
            self._bump("not_served")
            raise OpcoRouteNotServed(self.capabilities.code, "dossiers")
        return self.request("POST", route, json_body=payload, numero_interne=payload.get("numeroInterne"),
                            encoded=encoded)

    def send_once(self, payload: dict, *, encoded: bytes | None = None, max_pause: float = 0.25) -> SendOutcome:
        """One attempt at sending the dossier (v2 when served, else v1), no retry: a SendOutcome
        (see :mod:`..outcomes`). A 429 is RETRY_LATER with its Retry-After, honoured by the caller
        for this request only; the key's pacer pauses only on 429s in a row (other keys go on
        regardless). While the key is paused for longer than ``max_pause`` seconds nothing is
        sent (RETRY_LATER with the time left). Raises OpcoRouteNotServed (no contract route) and OpcoAuthError (key refused)."""
        route = self.capabilities.contract_route()
        if route is None:
            self._bump("not_served")
            raise OpcoRouteNotServed(self.capabilities.code, "dossiers")
        numero = payload.get("numeroInterne")
        prep = self._prepare("POST", route, None, payload, None, None, encoded, None)
        info = self._conn_info()
        pacer: Pacer = info.pacer
        self._bump("requests")
        paused = pacer.paused_for()
        if paused > max_pause:
            self._bump("deferred_by_pause")
            return SendOutcome(SendKind.RETRY_LATER, numero_interne=numero, retry_after=paused, sent=False,
                               message=f"{opco_label(info.code)} : limite de débit, clé en pause "
                                       f"{paused:.1f} s, nouvel essai plus tard")
        renewed = False
        attempt = 0
        while True:          # only a refused OAuth2 token is renewed and the POST made again (nothing written)
            attempt += 1
            headers = dict(prep["headers"])
            if prep["needs_token"]:
                try:
                    headers["Authorization"] = f"Bearer {self._token_value(max_attempts=1)}"
                except OpcoUnavailable as exc:
                    return SendOutcome(SendKind.RETRY_LATER, numero_interne=numero, sent=False,
                                       retry_after=suggested_delay(), message=str(exc))
            pacer.acquire()
            resp, body, err, _ = self._exchange("POST", prep["url"], prep["proof_route"], headers=headers,
                                                data=prep["data"], numero_interne=numero,
                                                request_sha256=prep["req_sha"], attempt=attempt)
            if resp is None:
                exc = getattr(self._tls, "last_transport_error", None)
                sent = bool(getattr(exc, "sent", True))
                out = classify_no_answer(info.code, route, numero, err, sent, isinstance(exc, TransportTimeout))
                self._bump(f"outcome_{out.kind.value.lower()}")
                return out
            status = resp.status
            if status == 401 and prep["needs_token"] and not renewed and _first_code(body) in TOKEN_ERRORS:
                renewed = True
                self._token_value(force=True, max_attempts=1)
                self._bump("token_renewed")
                continue
            if status in (401, 403):
                raise self._auth_error(status, body)
            retry_after = None
            if status == 429:
                wait = parse_retry_after(resp.header("Retry-After"))
                retry_after = min(wait if wait is not None else suggested_delay(2), 300.0)
                if pacer.rate_limited(retry_after):   # 429s in a row: real rate limiting
                    self._bump("key_paused")
                self._bump("rate_limited")
            elif status in (502, 503, 504):
                retry_after = parse_retry_after(resp.header("Retry-After"))
            elif status < 500:
                pacer.success()
            out = classify_answer(info.code, route, numero, status, resp.parsed, retry_after,
                                  self._response(route, resp, body, attempt))
            self._bump(f"outcome_{out.kind.value.lower()}")
            return out

    def find_dossiers(self, numeros: list[str], *, since: dt.datetime | None = None,
                      max_attempts: int = 3, first_route_only: bool = False
                      ) -> dict[str, DossierState | None | Unreadable]:
        """Settle whether the OPCO holds each dossier, through every read route it serves:
        liste (v1, 100 per call), then per-dossier GET (v2), then the v2 state changes since
        ``since`` (default: 7 days back; a dossier created at the OPCO appears there).
        Value per number: its DossierState (present), None (provably absent: a readable answer
        of a route that lists it would have named it), or an :class:`Unreadable` (could not be
        settled; the reason, naming the route and the OPCO). OpcoAuthError propagates.
        ``first_route_only``: only the first read route served (a caller that will read again
        soon: a liste call that failed is not followed by one GET per dossier)."""
        numeros = list(dict.fromkeys(n for n in numeros if n))
        out: dict[str, DossierState | None | Unreadable] = {}
        reasons: dict[str, Unreadable] = {}
        caps = self.capabilities
        todo = list(numeros)
        tried = False          # a read route was tried (first_route_only: no other)

        def fail(route_id: str, exc: Exception, nums: list[str]) -> None:
            u = exc if isinstance(exc, Unreadable) else Unreadable(self.opco_code, ROUTES[route_id].method,
                                                                   route_id, str(exc))
            for n in nums:
                reasons[n] = u

        if todo and caps.serves("liste_v1"):
            for i in range(0, len(todo), LISTE_MAX):
                chunk = todo[i:i + LISTE_MAX]
                try:
                    found, absent = self.liste_states(chunk, max_attempts=max_attempts)
                except (Unreadable, OpcoUnavailable) as exc:
                    fail("liste_v1", exc, chunk)
                    continue
                except OpcoAuthError:
                    raise
                except OpcoError as exc:
                    fail("liste_v1", exc, chunk)
                    continue
                for st in found:
                    out[st.numero_interne] = st
                for n in absent:
                    out.setdefault(n, None)
            todo = [n for n in todo if n not in out]
            tried = True
        if todo and caps.serves("dossier_read_v2") and not (first_route_only and tried):
            for n in list(todo):
                try:
                    resp = self.request("GET", "dossier_read_v2", params={"numeroInterne": n}, numero_interne=n,
                                        max_attempts=max_attempts, read=lambda r, n=n: self._read_one(r, n))
                except OpcoAuthError:
                    raise
                except OpcoError as exc:
                    fail("dossier_read_v2", exc, [n])
                    continue
                if resp.ok:
                    out[n] = resp.read
                elif resp.status == 404 and (resp.body_kind == "json" or any(e.get("code") for e in resp.erreurs)):
                    out[n] = None          # the OPCO's own "unknown dossier", not a gateway page or an empty 404
                else:
                    fail("dossier_read_v2", self._refused(resp, "dossier_read_v2"), [n])
            todo = [n for n in todo if n not in out]
            tried = True
        if todo and caps.serves("etats_v2") and not (first_route_only and tried):
            start = since or (utcnow() - dt.timedelta(days=7))
            wanted = set(todo)
            seen: dict[str, DossierState] = {}
            try:
                for item in self.iter_state_changes(start, None, max_attempts=max_attempts):
                    st = reading.read_state(item)
                    if st is not None and st.numero_interne in wanted:
                        prev = seen.get(st.numero_interne)
                        if prev is None or str(st.date_etat or "") >= str(prev.date_etat or ""):
                            seen[st.numero_interne] = st
            except OpcoAuthError:
                raise
            except OpcoError as exc:
                fail("etats_v2", exc, todo)
            else:
                for n in todo:
                    out[n] = seen.get(n)       # the whole window was read: absent means absent
            todo = [n for n in todo if n not in out]
        for n in todo:
            out[n] = reasons.get(n) or Unreadable.plain(
                self.opco_code, f"Impossible de vérifier le dossier {n} auprès de l'{opco_label(self.opco_code)} : "
                                f"aucune route de lecture des dossiers n'est servie par l'OPCO")
        return {n: out[n] for n in numeros}

    def _read_one(self, resp: OpcoResponse, numero: str) -> DossierState:
        parsed = reading.classify(resp.raw, resp.content_type)
        if parsed.kind != "json":
            raise Unreadable(self.opco_code, "GET", "dossier_read_v2", parsed.describe(resp.status), resp.status, numero)
        data = parsed.data
        if isinstance(data, list):       # a one-item list
            data = next((d for d in data if (reading.read_state(d) or DossierState("")).numero_interne == numero),
                        data[0] if len(data) == 1 else None)
        st = reading.read_state(data, numero_hint=numero) if isinstance(data, dict) else None
        if st is None or st.numero_interne != numero or not (st.etat or st.numero_deca or st.numero_externe):
            raise Unreadable(self.opco_code, "GET", "dossier_read_v2", "dossier sans état ni numéro lisible",
                             resp.status, numero)
        return st

    def get_dossier(self, numero_interne: str) -> OpcoResponse:
        return self.request("GET", "dossier_read_v2", params={"numeroInterne": numero_interne},
                            numero_interne=numero_interne)

    def list_dossiers(self, numeros: list[str], *, max_attempts: int | None = None) -> list[dict]:
        """States of the listed dossiers (v1 liste, chunks of ≤100), as the norm's items
        (``numeroInterne``, ``etat``, ``dateEtat``...) whatever shape the OPCO answered in;
        unknown numbers are absent. :class:`Unreadable` when an answer cannot be understood."""
        return [st.as_item() for st in self.liste_states(numeros, max_attempts=max_attempts)[0]]

    def liste_states(self, numeros: list[str], *, max_attempts: int | None = None
                     ) -> tuple[list[DossierState], set[str]]:
        """(states found, numbers the liste answers proved unknown) — v1 liste."""
        found: list[DossierState] = []
        absent: set[str] = set()
        numeros = list(dict.fromkeys(numeros))
        for i in range(0, len(numeros), LISTE_MAX):
            chunk = numeros[i:i + LISTE_MAX]
            resp = self.request("GET", "liste_v1", params={"numerosInternes": ",".join(chunk)},
                                numero_interne=chunk[0] if len(chunk) == 1 else None, max_attempts=max_attempts,
                                read=lambda r: self._read_list(r, "liste_v1", ("dossiers",)))
            if not resp.ok:
                raise self._refused(resp, "liste_v1")
            states = [st for st in resp.read if st.numero_interne in set(chunk)]
            found.extend(states)
            absent |= set(chunk) - {st.numero_interne for st in states}
        return found, absent

    def _read_list(self, resp: OpcoResponse, route_id: str, prefer: tuple = ()) -> list[DossierState]:
        return reading.read_list_answer(resp.raw, resp.content_type, resp.status, self.opco_code, route_id, prefer)

    def _refused(self, resp: OpcoResponse, route_id: str) -> OpcoError:
        return reading.refused(resp.status, resp.raw, resp.content_type, resp.erreurs, self.opco_code, route_id)

    def iter_state_changes(self, date_debut: dt.datetime, date_fin: dt.datetime | None,
                           page_size: int = 1000, *, max_attempts: int | None = None,
                           max_pages: int = 100_000) -> Iterator[dict]:
        """Every dossier whose state changed in [date_debut, date_fin), all pages (v2 etats), as the
        norm's items. Pages by number, offset/limit or next link (body or Link header), lists bare or
        wrapped (see :mod:`..reading`). :class:`Unreadable` when an answer cannot be understood."""
        pager = etats_pager(self.opco_code, self.base_url, date_debut, date_fin, page_size, max_pages)
        while pager.more():
            resp = self.request("GET", "etats_v2", params=pager.params, url=pager.url, max_attempts=max_attempts,
                                read=lambda r: self._read_list(r, "etats_v2", ("EtatDossierResult",)))
            if not resp.ok:
                raise self._refused(resp, "etats_v2")
            for st in resp.read:
                yield st.as_item()
            pager.advance(resp.body, resp.headers, resp.read, resp.status)

    def attach_document(self, numero_interne: str, type_fichier: str, filename: str, content: bytes,
                        mime: str = "application/pdf") -> OpcoResponse:
        form = {"typeFichier": type_fichier,
                "objets": json.dumps([{"typeObjet": "DOSSIER", "idObjet": numero_interne}], separators=(",", ":"))}
        return self.request("POST", "documents_v1", form=form, files={"fichier": (filename, content, mime)},
                            numero_interne=numero_interne)

    def send_convention(self, body: dict) -> OpcoResponse:
        return self.request("POST", "conventions_v1", json_body=body, numero_interne=body.get("numeroInterneDossier"))

    def send_rupture(self, body: dict) -> OpcoResponse:
        return self.request("POST", "rupture_v2", json_body=body, numero_interne=body.get("numeroInterne"))

    def send_facture(self, body: dict) -> OpcoResponse:
        return self.request("POST", "factures_v1", json_body=body, numero_interne=body.get("numeroInterneDossier"))

    def send_certificat(self, body: dict) -> OpcoResponse:
        """A certificat de réalisation (``POST /v2/certificats``; AFDAS): ``typeCertificat``
        Intermediaire or Final, the ``echeance`` it covers."""
        return self.request("POST", "certificats_v2", json_body=body, numero_interne=body.get("numeroInterneDossier"))

    def get_echeances(self, numero_interne: str, *, max_attempts: int | None = None) -> list[reading.Echeance]:
        """The payment schedule (échéances) of one dossier, from its read-back
        (``GET /v2/dossiers?numeroInterne=``). :class:`Unreadable` when the answer holds no
        readable schedule, OpcoError when the OPCO refuses (unknown dossier...),
        OpcoRouteNotServed when the OPCO does not serve the route."""
        def read(r: OpcoResponse) -> list[reading.Echeance]:
            parsed = reading.classify(r.raw, r.content_type)
            if parsed.kind != "json":
                raise Unreadable(self.opco_code, "GET", "dossier_read_v2", parsed.describe(r.status), r.status,
                                 numero_interne)
            got = reading.read_echeances(parsed.data, numero_interne, self.opco_code)
            if isinstance(got, Unreadable):
                raise got
            return got

        resp = self.request("GET", "dossier_read_v2", params={"numeroInterne": numero_interne},
                            numero_interne=numero_interne, max_attempts=max_attempts, read=read)
        if not resp.ok:
            raise self._refused(resp, "dossier_read_v2")
        return resp.read

    def iter_facture_changes(self, date_debut: dt.datetime, date_fin: dt.datetime | None, page_size: int = 1000,
                             *, max_attempts: int | None = None,
                             max_pages: int = 100_000) -> Iterator[reading.FactureState]:
        """Every invoice whose state changed in [date_debut, date_fin) (``/v2/factures/etats``),
        all pages whatever the OPCO's paging. :class:`Unreadable` when an answer cannot be
        understood; OpcoRouteNotServed when the OPCO does not serve the route."""
        if not self.capabilities.serves("factures_etats_v2"):
            raise OpcoRouteNotServed(self.opco_code, "factures_etats_v2")
        params = {"dateDebut": _iso(date_debut), "numeroPage": FIRST_PAGE, "taillePage": page_size}
        if date_fin is not None:
            params["dateFin"] = _iso(date_fin)
        pager = reading.Pager(self.opco_code, self.base_url, "factures_etats_v2", params, page_size, max_pages)
        while pager.more():
            resp = self.request("GET", "factures_etats_v2", params=pager.params, url=pager.url,
                                max_attempts=max_attempts,
                                read=lambda r: reading.read_facture_states(r.raw, r.content_type, r.status,
                                                                           self.opco_code))
            if not resp.ok:
                raise self._refused(resp, "factures_etats_v2")
            yield from resp.read
            pager.advance(resp.body, resp.headers, resp.read, resp.status)

    def find_factures(self, numeros: list[str], *, max_attempts: int = 3
                      ) -> dict[str, reading.FactureState | None | Unreadable]:
        """Settle whether the OPCO holds each invoice (``numeroInterneFacture``), through
        ``GET /v2/factures/etats?numeroInterneFacture=``: its FactureState (present), None
        (provably absent: a readable answer that does not name it) or an :class:`Unreadable`.
        OpcoAuthError propagates; OpcoRouteNotServed when the OPCO does not serve the route."""
        if not self.capabilities.serves("factures_etats_v2"):
            raise OpcoRouteNotServed(self.opco_code, "factures_etats_v2")
        out: dict[str, reading.FactureState | None | Unreadable] = {}
        for n in dict.fromkeys(x for x in numeros if x):
            try:
                resp = self.request("GET", "factures_etats_v2", params={"numeroInterneFacture": n},
                                    max_attempts=max_attempts,
                                    read=lambda r: reading.read_facture_states(r.raw, r.content_type, r.status,
                                                                               self.opco_code))
            except OpcoAuthError:
                raise
            except Unreadable as u:
                out[n] = u
                continue
            except OpcoError as exc:
                out[n] = Unreadable(self.opco_code, "GET", "factures_etats_v2", str(exc))
                continue
            if resp.ok:
                out[n] = next((st for st in resp.read if st.numero_facture == n), None)
            elif resp.status == 404 and resp.body_kind == "json":
                out[n] = None
            else:
                err = self._refused(resp, "factures_etats_v2")
                out[n] = err if isinstance(err, Unreadable) else Unreadable(self.opco_code, "GET",
                                                                            "factures_etats_v2", str(err))
        return out

    def status(self) -> OpcoResponse:
        return self.request("GET", "status")

    def server_now(self) -> dt.datetime:
        """The OPCO's clock (status ``date``, else the HTTP Date header, else ours)."""
        try:
            resp = self.status()
        except OpcoRouteNotServed:
            return utcnow()
        if resp.ok and isinstance(resp.body, dict) and resp.body.get("date"):
            try:
                d = dt.datetime.fromisoformat(str(resp.body["date"]).replace("Z", "+00:00"))
                return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)
            except ValueError:
                pass
        if resp.headers.get("Date") or resp.headers.get("date"):
            try:
                return parsedate_to_datetime(resp.headers.get("Date") or resp.headers["date"])
            except (TypeError, ValueError):
                pass
        return utcnow()

    def key_info(self) -> dict:
        """/v2/cfakeyinfo?siren=: {status, dateFinValidite, comment}."""
        info = self._conn_info()
        self._in_keyinfo.on = True
        try:
            resp = self.request("GET", "cfakeyinfo", params={"siren": info["siren"]})
        finally:
            self._in_keyinfo.on = False
        if not resp.ok:
            raise OpcoError(f"vérification de clé refusée par l'OPCO {info['code']} (HTTP {resp.status}) : "
                            f"{resp.error_text()}")
        return resp.body if isinstance(resp.body, dict) else {}

    def key_expiry_warning(self, days: int = 30, today: dt.date | None = None) -> str | None:
        """A warning text when the key is invalid or expires within ``days``, else None."""
        return self.key_status(days, today)["warning"]

    def key_status(self, days: int = 30, today: dt.date | None = None) -> dict:
        """What the OPCO says of this connection's key: {"status": VALID, EXPIRING, EXPIRED,
        INVALID or NOT_SERVED, "expires_on": date | None, "warning": French text | None}.
        Never the key itself."""
        info = self._conn_info()
        ident = parse_conn_id(self.opco_conn_id)[1] or ""
        held_by = f"l'établissement SIRET {ident}" if len(ident) == 14 else f"le SIREN {info['siren']}"
        who = f"La clé API de l'{opco_label(info['code'])} pour {held_by}"
        fix = f"demandez une nouvelle clé sur l'extranet de l'OPCO et mettez à jour la connexion {self.opco_conn_id}"
        try:
            ki = self.key_info()
        except OpcoRouteNotServed:
            return {"status": "NOT_SERVED", "expires_on": None, "warning": None}
        except OpcoAuthError as exc:
            exp = getattr(exc, "expires_on", None)
            return {"status": "EXPIRED" if exp is not None and getattr(exc, "expired", False) else "INVALID",
                    "expires_on": exp, "warning": str(exc)}
        fin = ki.get("dateFinValidite")
        try:
            end = dt.date.fromisoformat(str(fin)[:10]) if fin else None
        except ValueError:
            end = None
        today = today or dt.date.today()
        if ki.get("status") != "success":
            if end is not None and end < today:
                return {"status": "EXPIRED", "expires_on": end, "warning": f"{who} a expiré le {end.isoformat()} : {fix}"}
            return {"status": "INVALID", "expires_on": end, "warning":
                    f"{who} est signalée invalide par l'OPCO ({self._scrub(str(ki.get('comment') or ''))}) : {fix}"}
        if end is None:
            return {"status": "VALID", "expires_on": None, "warning": None}
        left = (end - today).days
        if left <= days:
            return {"status": "EXPIRING", "expires_on": end, "warning":
                    f"{who} expire le {end.isoformat()} (dans {left} jour{'s' if left > 1 else ''}) : {fix}"}
        return {"status": "VALID", "expires_on": end, "warning": None}

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI 'Test' button: /v1/status, then the key check when served."""
        try:
            resp = self.status()
            if not resp.ok:
                return False, f"/v1/status : HTTP {resp.status} {resp.error_text()}"
            msg = f"API de l'{opco_label(self.capabilities.code)} joignable (/v1/status OK)"
            if self.capabilities.serves("cfakeyinfo"):
                warning = self.key_expiry_warning(30)
                msg += f" ; ATTENTION : {warning}" if warning else " ; clé valable plus de 30 jours"
            return True, msg
        except Exception as exc:
            return False, str(exc)


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def _first_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("erreurs"), list) and body["erreurs"]:
        e = body["erreurs"][0]
        return e.get("code") if isinstance(e, dict) else None
    return None


def _erreurs_text(body: dict) -> str:
    errs = body.get("erreurs") if isinstance(body, dict) else None
    if not isinstance(errs, list):
        return ""
    # codes and fields only: an OPCO's message may quote a value sent (a NIR, a name)
    return "; ".join(f"{e.get('code') or ''} {e.get('champ') or ''}".strip()
                     for e in errs if isinstance(e, dict))[:500]
