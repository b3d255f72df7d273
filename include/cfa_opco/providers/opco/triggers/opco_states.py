"""OpcoStateChangeTrigger: waits, in the triggerer, until an OPCO reports state changes.

For each v2 connection it asks ``/v2/dossiers/etats`` (one row, page 1) whether any dossier
changed since ``since[conn_id]`` and fires ``{"status": "changed", ...}`` as soon as one did;
v1-only OPCOs cannot be windowed, so with any of them it fires after every poll; at the
deadline it fires ``{"status": "deadline"}``. An auth failure fires ``{"status": "error"}``.

Its requests go through :class:`~..hooks.opco_async.AsyncOpcoHook` (same connection parsing,
OAuth2, route table and reading as the sync hook) and every exchange is a proof: the sink is
built in the triggerer from ``proof_sink`` (dotted path of a factory, e.g.
``"cfa_opco.proofs.ProofRecorder"``) called with ``proof_target`` (the connector's
connection id), and flushed off the event loop after each poll.

A poll that fails (OPCO down, unreadable answer) is counted per key: every event carries
``poll_failures`` = ``{conn_id: {"count": n, "last_reason": "<French>"}}`` (counts carried
over from ``poll_failures`` given at construction), and once a key reaches
``max_poll_failures`` failed polls in a row the trigger fires ``{"status": "poll_failures"}``
so the sensor reports it at once instead of waiting silently.
The trigger serializes connection ids and paths only: keys and tokens are fetched in the triggerer.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ..connections import load_path
from ..exceptions import OpcoAuthError, OpcoError
from ..hooks.opco_async import AsyncOpcoHook

log = logging.getLogger(__name__)


def _parse(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    d = dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class OpcoStateChangeTrigger(BaseTrigger):
    def __init__(self, conn_ids: list[str], since: dict[str, str], poll_interval: float, deadline: str,
                 software: dict | None = None, request_timeout: float | None = None, proof_sink: str | None = None,
                 proof_target: str | None = None, run_id: str | None = None,
                 poll_failures: dict[str, dict] | None = None, max_poll_failures: int = 5):
        super().__init__()
        self.conn_ids = list(conn_ids)
        self.since = dict(since or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.software = dict(software or {})
        self.request_timeout = float(request_timeout) if request_timeout else None
        self.proof_sink, self.proof_target, self.run_id = proof_sink, proof_target, run_id
        self.poll_failures = {k: dict(v) for k, v in (poll_failures or {}).items()}
        self.max_poll_failures = int(max_poll_failures)
        self.polls = 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_ids": self.conn_ids, "since": self.since, "poll_interval": self.poll_interval,
                 "deadline": self.deadline, "software": self.software, "request_timeout": self.request_timeout,
                 "proof_sink": self.proof_sink, "proof_target": self.proof_target, "run_id": self.run_id,
                 "poll_failures": self.poll_failures, "max_poll_failures": self.max_poll_failures})

    def _sink(self):
        if not self.proof_sink:
            return None
        factory = load_path(self.proof_sink)
        sink = factory(self.proof_target) if self.proof_target is not None else factory()
        if hasattr(sink, "flush_every"):
            sink.flush_every = 10 ** 9      # never flushed inside the event loop: after each poll, in a thread
        return sink

    def _event(self, payload: dict) -> TriggerEvent:
        payload.setdefault("polls", self.polls)
        payload["poll_failures"] = {k: v for k, v in self.poll_failures.items() if v.get("count")}
        return TriggerEvent(payload)

    def _failed(self, conn_id: str, reason: str) -> None:
        f = self.poll_failures.setdefault(conn_id, {"count": 0, "consecutive": 0})
        f["count"] = int(f.get("count", 0)) + 1
        f["consecutive"] = int(f.get("consecutive", 0)) + 1
        f["last_reason"] = reason
        f["last_at"] = _now().isoformat()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = _parse(self.deadline)
        sink = None
        try:
            sink = self._sink()
        except Exception as exc:   # a proof store the triggerer cannot reach must not stop the watch
            log.error("proof sink %s not built (%s): exchanges of this wait are not recorded", self.proof_sink,
                      type(exc).__name__)
        hooks: list[AsyncOpcoHook] = []
        unreadable: list[str] = []
        for conn_id in self.conn_ids:
            h = AsyncOpcoHook(conn_id, software=self.software, proof_sink=sink, run_id=self.run_id,
                              timeout=self.request_timeout, max_attempts=1)
            try:
                await h.conn_info()
                hooks.append(h)
            except OpcoAuthError as exc:
                yield self._event({"status": "error", "conn_id": conn_id, "message": str(exc)})
                return
            except Exception as exc:   # e.g. a connection the triggerer cannot see: the sensor polls it
                log.info("trigger cannot read connection %s (%s): plain polling", conn_id, type(exc).__name__)
                unreadable.append(conn_id)
        windowed = [h for h in hooks if h.capabilities.serves("etats_v2")]
        unwindowed = [h.opco_conn_id for h in hooks if not h.capabilities.serves("etats_v2")] + unreadable
        try:
            while True:
                remaining = (deadline - _now()).total_seconds() if deadline else self.poll_interval
                if remaining <= 0:
                    yield self._event({"status": "deadline", "deadline": self.deadline})
                    return
                await asyncio.sleep(max(0.0, min(self.poll_interval, remaining)))
                if deadline and _now() >= deadline:
                    yield self._event({"status": "deadline", "deadline": self.deadline})
                    return
                self.polls += 1
                changed: dict[str, int] = {}
                for h in windowed:
                    cid = h.opco_conn_id
                    try:
                        n = await h.count_changes_since(self.since.get(cid) or _now().isoformat())
                    except OpcoAuthError as exc:
                        await self._flush(sink)
                        yield self._event({"status": "error", "conn_id": cid, "message": str(exc)})
                        return
                    except OpcoError as exc:          # unavailable, unreadable, refused: counted, reported
                        self._failed(cid, str(exc))
                        log.warning("suivi %s : lecture des états en échec : %s", cid, exc)
                        continue
                    except Exception as exc:          # never a Python error out of the triggerer
                        self._failed(cid, f"erreur inattendue en lisant les états ({type(exc).__name__})")
                        log.warning("suivi %s : %s", cid, type(exc).__name__)
                        continue
                    if cid in self.poll_failures:
                        self.poll_failures[cid]["consecutive"] = 0
                    if n:
                        changed[cid] = n
                await self._flush(sink)
                if changed or unwindowed:
                    yield self._event({"status": "changed", "changed": changed, "unwindowed": unwindowed})
                    return
                if any(int(f.get("consecutive", 0)) >= self.max_poll_failures for f in self.poll_failures.values()):
                    yield self._event({"status": "poll_failures"})
                    return
        finally:
            for h in hooks:
                await h.aclose()
            await self._flush(sink, close=True)

    @staticmethod
    async def _flush(sink, close: bool = False) -> None:
        if sink is None:
            return
        fn = getattr(sink, "close" if close else "flush", None)
        if fn is None:
            return
        try:
            await asyncio.to_thread(fn)
        except Exception as exc:
            log.error("exchange proofs of the trigger not written yet: %s", type(exc).__name__)
