"""OpcoStateChangeTrigger: waits, in the triggerer, until an OPCO reports state changes.

For each v2 connection it asks ``/v2/dossiers/etats`` (one row, page 1) whether any dossier
changed since ``since[conn_id]`` and fires ``{"status": "changed", ...}`` as soon as one did;
v1-only OPCOs cannot be windowed, so with any of them it fires after every poll; at the
deadline it fires ``{"status": "deadline"}``. An auth failure fires ``{"status": "error"}``.
The trigger serializes connection ids only: keys and tokens are fetched in the triggerer.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)


def _parse(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    d = dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def _get_connection(conn_id: str):
    from airflow.sdk import BaseHook

    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)


class OpcoStateChangeTrigger(BaseTrigger):
    def __init__(self, conn_ids: list[str], since: dict[str, str], poll_interval: float, deadline: str,
                 software: dict | None = None, request_timeout: float = 30.0, proof_sink: str | None = None,
                 proof_target: str | None = None, run_id: str | None = None):
        super().__init__()
        self.proof_sink, self.proof_target, self.run_id = proof_sink, proof_target, run_id
        self.conn_ids = list(conn_ids)
        self.since = dict(since or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.software = dict(software or {})
        self.request_timeout = float(request_timeout)
        self.polls = 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_ids": self.conn_ids, "since": self.since, "poll_interval": self.poll_interval,
                 "deadline": self.deadline, "software": self.software, "request_timeout": self.request_timeout,
                 "proof_sink": self.proof_sink, "proof_target": self.proof_target, "run_id": self.run_id})

    async def _info(self, conn_id: str) -> dict:
        from ..capabilities import Capabilities
        from ..norm import parse_conn_id
        from ..norm import DEFAULT_SOFTWARE

        conn = await _get_connection(conn_id)
        extra = conn.extra_dejson or {}
        code, siren = parse_conn_id(conn_id)
        code = (extra.get("opco") or code or "").lower()
        host = (conn.host or "").strip()
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        sw = {**DEFAULT_SOFTWARE, **{k: str(extra[k]) for k in DEFAULT_SOFTWARE if extra.get(k)},
              **{k.lower(): str(v) for k, v in self.software.items() if v}}
        split = urlsplit(host)
        token_url = extra.get("oauth_token_url") or (
            f"{split.scheme}://{split.netloc}{extra['oauth_token_path']}" if extra.get("oauth_token_path") else None)
        return {"conn_id": conn_id, "base": host.rstrip("/"), "key": conn.password or "", "code": code,
                "siren": extra.get("siren") or siren, "caps": Capabilities.for_opco(code), "software": sw,
                "token_url": token_url, "client_id": extra.get("oauth_client_id"),
                "client_secret": extra.get("oauth_client_secret"), "token": None}

    async def _token(self, client, info: dict) -> str | None:
        if not info["caps"].needs_oauth_v2:
            return None
        tok = info.get("token")
        if tok and tok[1] > asyncio.get_running_loop().time():
            return tok[0]
        r = await client.post(info["token_url"], data={"grant_type": "client_credentials",
                                                       "client_id": info["client_id"] or "",
                                                       "client_secret": info["client_secret"] or ""})
        if r.status_code != 200:
            raise PermissionError(f"jeton OAuth2 refusé (HTTP {r.status_code})")
        body = r.json()
        life = float(body.get("expires_in") or 3600)
        info["token"] = (body["access_token"], asyncio.get_running_loop().time() + life - min(60.0, life * 0.1))
        return info["token"][0]

    async def _changes_since(self, client, info: dict) -> int | None:
        """Number of dossiers changed since ``since`` (None: could not tell this time)."""
        since = self.since.get(info["conn_id"]) or _now().isoformat()
        sw = info["software"]
        headers = {"X-API-KEY": info["key"], "EDITEUR": sw["editeur"], "LOGICIEL": sw["logiciel"],
                   "VERSION": sw["version"], "Accept": "application/json"}
        token = await self._token(client, info)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = await client.get(info["base"] + "/v2/dossiers/etats",
                             params={"numeroPage": 1, "taillePage": 1, "dateDebut": since}, headers=headers)
        if r.status_code == 401 and token:
            info["token"] = None
            return None
        if r.status_code in (401, 403):
            from ..norm import opco_label

            raise PermissionError(f"clé API refusée par l'{opco_label(info['code'])} pour le SIREN {info['siren']} "
                                  f"(HTTP {r.status_code}, connexion {info['conn_id']})")
        if r.status_code != 200:
            log.info("OPCO %s etats: HTTP %s, next poll", info["code"], r.status_code)
            return None
        return int((r.json() or {}).get("total") or 0)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        deadline = _parse(self.deadline)
        infos, unreadable = [], []
        for conn_id in self.conn_ids:
            try:
                infos.append(await self._info(conn_id))
            except Exception as exc:   # e.g. a connection the triggerer cannot see: the sensor polls it
                log.info("trigger cannot read connection %s (%s): plain polling", conn_id, type(exc).__name__)
                unreadable.append(conn_id)
        windowed = [i for i in infos if i["caps"].serves("etats_v2")]
        unwindowed = [i["conn_id"] for i in infos if not i["caps"].serves("etats_v2")] + unreadable
        async with httpx.AsyncClient(timeout=self.request_timeout, trust_env=False) as client:
            while True:
                remaining = (deadline - _now()).total_seconds() if deadline else self.poll_interval
                if remaining <= 0:
                    yield TriggerEvent({"status": "deadline", "deadline": self.deadline, "polls": self.polls})
                    return
                await asyncio.sleep(max(0.0, min(self.poll_interval, remaining)))
                if deadline and _now() >= deadline:
                    yield TriggerEvent({"status": "deadline", "deadline": self.deadline, "polls": self.polls})
                    return
                self.polls += 1
                changed: dict[str, int] = {}
                for info in windowed:
                    try:
                        n = await self._changes_since(client, info)
                    except PermissionError as exc:
                        yield TriggerEvent({"status": "error", "conn_id": info["conn_id"], "message": str(exc)})
                        return
                    except (httpx.HTTPError, ValueError) as exc:
                        log.info("OPCO %s etats poll failed (%s), next poll", info["code"], type(exc).__name__)
                        continue
                    if n:
                        changed[info["conn_id"]] = n
                if changed or unwindowed:
                    yield TriggerEvent({"status": "changed", "changed": changed, "unwindowed": unwindowed,
                                        "polls": self.polls})
                    return
