"""AsyncOpcoHook: the async twin of :class:`~.opco.OpcoHook`, for the triggerer.

Not a copy: it shares the hook's connection parsing (:func:`..connections.parse_connection`),
the request preparation against the norm's route table and the OPCO's capabilities
(:func:`.opco.prepare_request`), the reading of answers (:mod:`..reading`,
:func:`.opco.make_response`) and the proof records (:func:`.opco.answer_record`). What
differs is the I/O: ``httpx.AsyncClient``, ``asyncio.sleep`` for backoff and 429 pauses.

    async with AsyncOpcoHook("opco_akto_775672272", proof_sink=sink, run_id=run_id) as h:
        n = await h.count_changes_since(since)          # /v2/dossiers/etats, one row
        states, absent = await h.liste_states(["A-1", "A-2"])

AKTO's OAuth2 token (client_credentials) is fetched, cached and renewed when the server
says it expired, like the sync hook. Timeouts: the connection's connect_timeout /
read_timeout (3 s / 5 s by default). Every attempt is handed to ``proof_sink``.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook

from .. import reading
from ..capabilities import Capabilities
from ..connections import ConnInfo, parse_connection
from ..exceptions import OpcoAuthError, OpcoError, OpcoRouteNotServed, OpcoUnavailable
from ..norm import FIRST_PAGE, LISTE_MAX, ROUTES, parse_conn_id
from ..proofs import ExchangeRecord, utcnow
from ..reading import DossierState, Unreadable
from .opco import (RE_DATE, TOKEN_ERRORS, OpcoResponse, _first_code, _iso, answer_record, etats_pager, make_response,
                   no_answer_record, parse_retry_after, prepare_request, retry_unreadable, scrub)

log = logging.getLogger(__name__)


async def aget_connection(conn_id: str):
    """The Airflow connection, without blocking the triggerer's event loop."""
    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)


class AsyncOpcoHook:
    def __init__(self, opco_conn_id: str, *, software: dict | None = None, timeout: float | tuple | None = None,
                 proof_sink: Callable[[ExchangeRecord], None] | None = None, run_id: str | None = None,
                 max_attempts: int = 3, backoff_base: float = 0.5, backoff_max: float = 5.0):
        self.opco_conn_id = opco_conn_id
        self.software, self.timeout = software, timeout
        self.proof_sink, self.run_id = proof_sink, run_id
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.opco_code, self.siren = parse_conn_id(opco_conn_id)
        self._info: ConnInfo | None = None
        self._client = None
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()
        self._pause_until = 0.0
        self.request_count = 0

    # ---- connection -------------------------------------------------------------------
    async def conn_info(self) -> ConnInfo:
        if self._info is None:
            conn = await aget_connection(self.opco_conn_id)
            self._info = parse_connection(conn, self.opco_conn_id, software=self.software, timeout=self.timeout)
            self.opco_code, self.siren = self._info.code, self._info.siren
        return self._info

    @property
    def capabilities(self) -> Capabilities:
        return self._info.caps if self._info is not None else Capabilities.for_opco(self.opco_code or "")

    async def client(self):
        if self._client is None:
            info = await self.conn_info()
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(info.read_timeout, connect=info.connect_timeout),
                trust_env=False, proxy=info.proxy, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "AsyncOpcoHook":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ---- internals ------------------------------------------------------------------------
    def _secrets(self) -> tuple:
        return (*(self._info.secrets() if self._info else ()), (self._token or ("",))[0])

    def _record(self, rec: ExchangeRecord | None) -> None:
        if rec is None or self.proof_sink is None:
            return
        try:
            self.proof_sink(rec)
        except Exception as exc:
            log.error("proof of exchange not recorded (%s %s): %s", rec.method, rec.route, type(exc).__name__)

    def _backoff(self, failures: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** (failures - 1))))

    async def _exchange(self, method: str, url: str, proof_route: str, *, headers: dict, data: Any = None,
                        numero_interne: str | None = None, request_sha256: str | None = None, attempt: int = 1,
                        defer: bool = False, is_token: bool = False):
        """One attempt: (status, headers, content, parsed, None, pending record) or (None, ..., error, None)."""
        info = await self.conn_info()
        client = await self.client()
        sent_at = utcnow()
        self.request_count += 1
        wait = self._pause_until - time.monotonic()
        if wait > 0:                       # this key's 429 pause: other keys' hooks are not held
            await asyncio.sleep(wait)
        try:
            if isinstance(data, dict):
                r = await client.request(method, url, data=data, headers=headers)
            else:
                r = await client.request(method, url, content=data, headers=headers)
            content = r.content
        except httpx.HTTPError as exc:
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            err = f"{kind}: {type(exc).__name__}"
            self._record(no_answer_record(info, self.run_id, method, proof_route, numero_interne, attempt, sent_at,
                                          request_sha256, err))
            return None, {}, b"", None, err, None
        ctype = r.headers.get("content-type")
        parsed = reading.classify(content, ctype)
        rec = answer_record(info, self.run_id, method, proof_route, numero_interne, attempt, sent_at, request_sha256,
                            r.status_code, content, ctype, parsed, self._secrets(), is_token=is_token)
        if defer and 200 <= r.status_code < 300:
            return r.status_code, dict(r.headers), content, parsed, None, rec
        self._record(rec)
        return r.status_code, dict(r.headers), content, parsed, None, None

    async def _token_value(self, force: bool = False) -> str:
        info = await self.conn_info()
        async with self._token_lock:
            if not force and self._token and time.monotonic() < self._token[1]:
                return self._token[0]
            if not info.token_url or not info.client_id:
                raise OpcoAuthError(info.code, info.siren, None, "oauth_client_id / oauth_token_path absents de la "
                                    "connexion", conn_id=self.opco_conn_id, code="OAUTH")
            route = urlsplit(info.token_url).path
            form = {"grant_type": "client_credentials", "client_id": info.client_id,
                    "client_secret": info.client_secret or ""}
            for attempt in range(1, self.max_attempts + 1):
                status, _, content, parsed, err, _ = await self._exchange(
                    "POST", info.token_url, route, headers={"Accept": "application/json"}, data=form,
                    attempt=attempt, is_token=True)
                body = parsed.data if parsed is not None and parsed.is_json else None
                if status is not None and status < 300 and isinstance(body, dict) and body.get("access_token"):
                    life = float(body.get("expires_in") or 3600)
                    self._token = (str(body["access_token"]), time.monotonic() + life - min(60.0, life * 0.1))
                    return self._token[0]
                if status in (400, 401, 403):
                    bd = body if isinstance(body, dict) else {}
                    raise OpcoAuthError(info.code, info.siren, status,
                                        scrub(str(bd.get("error_description") or bd.get("error") or "refus"),
                                              self._secrets()), conn_id=self.opco_conn_id, code="CLIENT_INVALIDE")
                if attempt < self.max_attempts:
                    await asyncio.sleep(self._backoff(attempt))
            raise OpcoUnavailable(info.code, "oauth_token", self.max_attempts, err or f"HTTP {status}")

    def _auth_error(self, status: int, body: Any) -> OpcoAuthError:
        info = self._info
        errs = reading.read_errors(body) if isinstance(body, dict) else []
        first = errs[0] if errs else {}
        message = scrub(str(first.get("message") or ""), self._secrets())
        m = RE_DATE.search(message)
        expires = m.group(1) if m and ("expir" in message.lower() or first.get("code") == "CLE_EXPIREE") else None
        return OpcoAuthError(info.code, info.siren, status, message, expires, conn_id=self.opco_conn_id,
                             code=first.get("code"))

    # ---- the one entry point ------------------------------------------------------------
    async def request(self, method: str, route_id: str, *, params: dict | None = None, json_body: Any = None,
                      numero_interne: str | None = None, max_attempts: int | None = None, url: str | None = None,
                      read: Callable[[OpcoResponse], Any] | None = None) -> OpcoResponse:
        """As OpcoHook.request: 5xx/timeouts retried with backoff (``max_attempts``), 429 waits
        Retry-After, 401/403 raise OpcoAuthError, 4xx returned with the OPCO's errors; ``read``
        applied to a 2xx before its proof is recorded (Unreadable: raw body kept, then raised)."""
        caps = self.capabilities
        if route_id in ROUTES and not caps.serves(route_id):
            raise OpcoRouteNotServed(caps.code, route_id)
        info = await self.conn_info()
        prep = prepare_request(info, info.caps, method, route_id, params, json_body, url=url)
        limit = max(1, int(max_attempts or self.max_attempts))
        failures = limited = attempt = 0
        renewed = False
        while True:
            attempt += 1
            headers = dict(prep["headers"])
            if prep["needs_token"]:
                headers["Authorization"] = f"Bearer {await self._token_value()}"
            status, hdrs, content, parsed, err, rec = await self._exchange(
                prep["method"], prep["url"], prep["proof_route"], headers=headers, data=prep["data"],
                numero_interne=numero_interne, request_sha256=prep["req_sha"], attempt=attempt,
                defer=read is not None)
            body = parsed.data if parsed is not None and parsed.is_json else None
            if status == 429:
                limited += 1
                wait = parse_retry_after(next((v for k, v in hdrs.items() if k.lower() == "retry-after"), None))
                wait = min(wait if wait is not None else self._backoff(limited + 1), 60.0)
                self._pause_until = max(self._pause_until, time.monotonic() + wait)
                if limited > 5 * limit:
                    raise OpcoUnavailable(info.code, route_id, attempt, "HTTP 429 répétés (limite de débit)")
                continue
            if status is None or status >= 500:
                failures += 1
                last = err or f"HTTP {status}" + ("" if parsed is None or parsed.is_json
                                                 else f" ({parsed.describe()})")
                if failures >= limit:
                    raise OpcoUnavailable(info.code, route_id, attempt, last)
                await asyncio.sleep(self._backoff(failures))
                continue
            if status == 401 and prep["needs_token"] and not renewed and _first_code(body) in TOKEN_ERRORS:
                renewed = True
                await self._token_value(force=True)
                continue
            if status in (401, 403):
                raise self._auth_error(status, body)
            out = make_response(route_id, status, hdrs, content, attempt, parsed)
            if rec is not None:
                try:
                    out.read = read(out)
                except Unreadable as u:
                    rec.response_body = rec.response_body or reading.proof_body(content, self._secrets())
                    rec.error = scrub(str(u), self._secrets())
                    if retry_unreadable(prep["method"], out) and failures + 1 < limit:
                        failures += 1           # a gateway or maintenance page on a read: read again later
                        self._record(rec)
                        rec = None
                        await asyncio.sleep(self._backoff(failures))
                        continue
                    raise
                finally:
                    self._record(rec)
            return out

    # ---- routes -----------------------------------------------------------------------------
    def _read_list(self, resp: OpcoResponse, route_id: str, prefer: tuple = ()) -> list[DossierState]:
        return reading.read_list_answer(resp.raw, resp.content_type, resp.status, self.opco_code, route_id, prefer)

    def _refused(self, resp: OpcoResponse, route_id: str) -> OpcoError:
        return reading.refused(resp.status, resp.raw, resp.content_type, resp.erreurs, self.opco_code, route_id)

    async def status(self) -> OpcoResponse:
        return await self.request("GET", "status")

    async def liste_states(self, numeros: list[str]) -> tuple[list[DossierState], set[str]]:
        """(states found, numbers proved unknown) through v1 liste, 100 per call."""
        found: list[DossierState] = []
        absent: set[str] = set()
        numeros = list(dict.fromkeys(numeros))
        for i in range(0, len(numeros), LISTE_MAX):
            chunk = numeros[i:i + LISTE_MAX]
            resp = await self.request("GET", "liste_v1", params={"numerosInternes": ",".join(chunk)},
                                      numero_interne=chunk[0] if len(chunk) == 1 else None,
                                      read=lambda r: self._read_list(r, "liste_v1", ("dossiers",)))
            if not resp.ok:
                raise self._refused(resp, "liste_v1")
            states = [st for st in resp.read if st.numero_interne in set(chunk)]
            found += states
            absent |= set(chunk) - {st.numero_interne for st in states}
        return found, absent

    async def list_dossiers(self, numeros: list[str]) -> list[dict]:
        return [st.as_item() for st in (await self.liste_states(numeros))[0]]

    async def state_changes(self, date_debut: dt.datetime, date_fin: dt.datetime | None = None,
                            page_size: int = 1000, max_pages: int = 100_000) -> AsyncIterator[dict]:
        """As OpcoHook.iter_state_changes (every page, any paging style), asynchronously."""
        info = await self.conn_info()
        pager = etats_pager(self.opco_code, info.base, date_debut, date_fin, page_size, max_pages)
        while pager.more():
            resp = await self.request("GET", "etats_v2", params=pager.params, url=pager.url,
                                      read=lambda r: self._read_list(r, "etats_v2", ("EtatDossierResult",)))
            if not resp.ok:
                raise self._refused(resp, "etats_v2")
            for st in resp.read:
                yield st.as_item()
            pager.advance(resp.body, resp.headers, resp.read, resp.status)

    async def count_changes_since(self, since: str | dt.datetime) -> int:
        """How many dossiers changed since ``since`` (v2 etats, one row asked): the answer's
        total when it gives one, else the number of rows it holds (enough to know "some")."""
        since_s = since if isinstance(since, str) else _iso(since)
        resp = await self.request("GET", "etats_v2", params={"numeroPage": FIRST_PAGE, "taillePage": 1,
                                                             "dateDebut": since_s},
                                  read=lambda r: self._read_list(r, "etats_v2", ("EtatDossierResult",)))
        if not resp.ok:
            raise self._refused(resp, "etats_v2")
        meta = resp.body if isinstance(resp.body, dict) else {}
        total = reading.int_or_none(reading.first(meta, reading.TOTAL_KEYS))
        if total is None and isinstance(meta.get("pagination"), dict):
            total = reading.int_or_none(reading.first(meta["pagination"], reading.TOTAL_KEYS))
        return total if total is not None else len(resp.read)
