"""Fault injection (an ASGI layer in front of the app) and the per-key token bucket.

The layer also counts answers by status code per OPCO for /_sandbox/stats."""
from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

API_ROUTES = {
    ("GET", "v1/status"): "status",
    ("GET", "v2/cfakeyinfo"): "cfakeyinfo",
    ("POST", "v1/dossiers"): "dossiers_v1",
    ("POST", "v2/dossiers"): "dossiers_v2",
    ("GET", "v2/dossiers"): "dossier_read_v2",
    ("GET", "v1/dossiers/liste"): "liste_v1",
    ("GET", "v2/dossiers/etats"): "etats_v2",
    ("POST", "v1/documents"): "documents_v1",
    ("POST", "v1/conventions"): "conventions_v1",
    ("POST", "v2/certificats"): "certificats_v2",
    ("POST", "v1/factures"): "factures_v1",
    ("GET", "v2/factures/etats"): "factures_etats_v2",
    ("POST", "v2/dossiers/rupture/employeur"): "rupture_v2",
}

FAULT_KINDS = ("error_503", "error_429", "drop", "hang", "lost_response")


def route_of(method: str, path: str) -> tuple[str | None, str | None]:
    """('akto', 'dossiers_v2') for POST /akto/ApiEchangeCFA/v2/dossiers; (opco, None) when
    the OPCO part is there but the route is unknown; (None, None) outside the API."""
    if not path.startswith("/") or path.startswith("/_sandbox") or path in ("/docs", "/openapi.json"):
        return None, None
    parts = path[1:].split("/", 2)
    if len(parts) >= 2 and parts[1] == "oauth" and path.endswith("/oauth/token"):
        return parts[0], "oauth_token"
    if len(parts) < 3 or parts[1] != "ApiEchangeCFA":
        return None, None
    return parts[0], API_ROUTES.get((method, parts[2].rstrip("/")))


class Faults:
    def __init__(self, spec: dict):
        self.configure(spec)

    def configure(self, spec: dict) -> None:
        self.spec = dict(spec)
        self.rng = random.Random(spec.get("seed", 1234))
        self.methods = {str(m).upper() for m in (spec.get("methods") or ["ALL"])}
        self.routes = set(spec.get("routes") or [])
        self.opcos = {str(o).lower() for o in (spec.get("opcos") or [])}
        self.p = [(k, float(spec.get(k) or 0.0)) for k in FAULT_KINDS]
        self.latency = float(spec.get("latency_ms") or 0.0) / 1000.0
        self.jitter = float(spec.get("latency_jitter_ms") or 0.0) / 1000.0
        self.hang_seconds = float(spec.get("hang_seconds") or 30.0)
        self.lost_mode = str(spec.get("lost_response_mode", "503"))
        self.active = any(p > 0 for _, p in self.p) or self.latency > 0 or self.jitter > 0

    def applies(self, method: str, opco: str | None, route: str | None) -> bool:
        if not self.active:
            return False
        if "ALL" not in self.methods and method not in self.methods:
            return False
        if self.routes and route not in self.routes:
            return False
        if self.opcos and opco not in self.opcos:
            return False
        return True

    def draw(self) -> tuple[str | None, float]:
        u = self.rng.random()
        delay = self.latency + (self.rng.random() * self.jitter if self.jitter else 0.0)
        acc = 0.0
        for kind, p in self.p:
            acc += p
            if u < acc:
                return kind, delay
        return None, delay


class TokenBucket:
    """Per-key token bucket: ``rate`` tokens/s, capacity ``burst``. A client pacing at
    exactly ``rate`` never finds the bucket empty."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[str, list[float]] = {}

    def take(self, key: str, rate: float, burst: float) -> float:
        """0.0 when allowed, else the seconds to wait for the next token."""
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = [burst, now]
        tokens = min(burst, b[0] + (now - b[1]) * rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        return (1.0 - tokens) / rate

    def clear(self) -> None:
        self.buckets.clear()


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"erreurs": [{"code": code, "champ": None, "message": message}]},
                      ensure_ascii=False).encode("utf-8")


async def _send_simple(send, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def _abort(send) -> bool:
    """Close the TCP connection without any HTTP answer (uvicorn's cycle behind ``send``)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    try:
        cycle.disconnected = True
    except Exception:  # pragma: no cover
        pass
    return True


class FaultLayer:
    def __init__(self, app, sandbox: Any):
        self.app = app
        self.sb = sandbox

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        opco, route = route_of(method, scope["path"])
        if opco is None:
            return await self.app(scope, receive, send)
        store = self.sb.store

        async def counting_send(message, _send=send):
            if message["type"] == "http.response.start":
                store.bump(opco if opco in self.sb.caps else "_unknown", "status", str(message["status"]))
            await _send(message)

        faults: Faults = self.sb.faults
        if faults.applies(method, opco, route):
            kind, delay = faults.draw()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "error_503":
                store.bump(opco, "fault", kind)
                return await _send_simple(counting_send, 503, _error_body(
                    "SERVICE_INDISPONIBLE", "service momentanément indisponible (sandbox: faute injectée)"),
                    [(b"retry-after", b"1")])
            if kind == "error_429":
                store.bump(opco, "fault", kind)
                return await _send_simple(counting_send, 429, _error_body(
                    "TROP_DE_REQUETES", "trop de requêtes (sandbox: faute injectée)"), [(b"retry-after", b"1")])
            if kind == "drop":
                store.bump(opco, "fault", kind)
                if _abort(send):
                    return None
                raise ConnectionAbortedError("sandbox drop")
            if kind == "hang":
                store.bump(opco, "fault", kind)
                await asyncio.sleep(faults.hang_seconds)
                if not _abort(send):
                    raise ConnectionAbortedError("sandbox hang")
                return None
            if kind == "lost_response":
                store.bump(opco, "fault", kind)
                started = {}

                async def swallow(message):
                    if message["type"] == "http.response.start":
                        started["status"] = message["status"]

                await self.app(scope, receive, swallow)   # the request IS processed
                store.bump(opco, "lost", str(started.get("status")))
                if faults.lost_mode == "drop" and _abort(send):
                    return None
                return await _send_simple(counting_send, 503, _error_body(
                    "SERVICE_INDISPONIBLE", "service momentanément indisponible"), [(b"retry-after", b"1")])
        return await self.app(scope, receive, counting_send)
