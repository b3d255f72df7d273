"""Fault injection (an ASGI layer in front of the app) and the per-key token bucket.

The layer also counts answers by status code per OPCO for /_sandbox/stats."""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from cfa_opco.providers.opco.norm import ROUTES

from . import profiles

# (method, path under /ApiEchangeCFA/) -> route id, from the client's own table
API_ROUTES = {(r.method, r.path.lstrip("/")): r.id for r in ROUTES.values()}

# drawn in this order from one RNG (new kinds appended: a seed keeps its old draws)
FAULT_KINDS = ("error_503", "error_429", "drop", "hang", "lost_response", "error_502", "error_504", "held", "late")

_OFF = {k: 0.0 for k in FAULT_KINDS}
_OFF.update(lost_response_mode="503", retry_after_min=1, retry_after_max=1, held_seconds=35.0, late_seconds=3.0)
# named fault mixes: every share and mode, so that switching preset leaves nothing behind
PRESETS: dict[str, dict] = {
    "off": dict(_OFF),
    # some 503/429 and a rare lost answer (processed, then 503)
    "light": dict(_OFF, error_503=0.05, error_429=0.05, lost_response=0.01),
    # issue 10: ~15 % 503, 15 % 429 with Retry-After 1-2 s, 3 % answers held 35 s after the
    # write, 2 % connections dropped after the write
    "heavy": dict(_OFF, error_503=0.15, error_429=0.15, retry_after_min=1, retry_after_max=2,
                  held=0.03, held_seconds=35.0, lost_response=0.02, lost_response_mode="drop"),
}


def with_preset(faults: dict, preset: str, explicit: dict | None = None) -> dict:
    """``faults`` with the preset's shares and modes, then ``explicit`` keys on top
    (filters such as methods/routes/opcos and the seed are kept unless given)."""
    if preset not in PRESETS:
        raise ValueError(f"préréglage de fautes inconnu : {preset!r} ; valeurs possibles : {', '.join(PRESETS)}")
    out = dict(faults)
    out.update(PRESETS[preset])
    out.update(explicit or {})
    out["preset"] = preset
    return out


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
        self.held_seconds = float(spec.get("held_seconds") or 35.0)
        self.late_seconds = float(spec.get("late_seconds") or 3.0)
        lo = float(spec.get("retry_after_min") or 1)
        hi = float(spec.get("retry_after_max") or lo)
        self.retry_after_range = (min(lo, hi), max(lo, hi))
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


    def retry_after(self) -> str:
        """Retry-After of an injected 429/503: whole seconds when the range's ends are whole
        (``1``-``2`` -> "1" or "2"), else a decimal number of seconds."""
        lo, hi = self.retry_after_range
        if lo == hi:
            return f"{lo:g}"
        if lo.is_integer() and hi.is_integer():
            return str(self.rng.randint(int(lo), int(hi)))
        return f"{self.rng.uniform(lo, hi):.3f}"


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
        prof = self.sb.profile(opco)

        async def error(status: int, code: str, message: str, retry_after: str | None = None):
            resp = profiles.render_error(prof, status, [{"code": code, "champ": None, "message": message}],
                                         {"Retry-After": retry_after} if retry_after else None)
            await resp(scope, receive, counting_send)

        if faults.applies(method, opco, route):
            kind, delay = faults.draw()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind is not None:
                store.bump(opco, "fault", kind)
            if kind == "error_503":
                return await error(503, "SERVICE_INDISPONIBLE",
                                   "service momentanément indisponible (sandbox: faute injectée)", faults.retry_after())
            if kind == "error_429":
                return await error(429, "TROP_DE_REQUETES", "trop de requêtes (sandbox: faute injectée)",
                                   faults.retry_after())
            if kind == "error_502":
                return await error(502, "PASSERELLE_EN_ERREUR", "passerelle en erreur (sandbox: faute injectée)")
            if kind == "error_504":
                return await error(504, "PASSERELLE_DELAI_DEPASSE",
                                   "délai de la passerelle dépassé (sandbox: faute injectée)")
            if kind == "drop":
                if _abort(send):
                    return None
                raise ConnectionAbortedError("sandbox drop")
            if kind == "hang":
                await asyncio.sleep(faults.hang_seconds)
                if not _abort(send):
                    raise ConnectionAbortedError("sandbox hang")
                return None
            if kind == "lost_response":
                started = {}

                async def swallow(message):
                    if message["type"] == "http.response.start":
                        started["status"] = message["status"]

                await self.app(scope, receive, swallow)   # the request IS processed
                store.bump(opco, "lost", str(started.get("status")))
                if faults.lost_mode == "drop" and _abort(send):
                    return None
                return await error(503, "SERVICE_INDISPONIBLE", "service momentanément indisponible",
                                   faults.retry_after())
            if kind == "late":
                # a busy OPCO: the request is taken in at once and processed late_seconds later,
                # even when the client has given up by then (a backend does not know it left)
                chunks = []
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        break
                body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

                async def replay():
                    nonlocal body
                    out, body = body, {"type": "http.disconnect"}
                    return out

                async def answer_if_still_there(message):
                    try:
                        await counting_send(message)
                    except Exception:  # the client gave up: nothing to answer to
                        pass

                async def late():
                    await asyncio.sleep(faults.late_seconds)
                    store.bump(opco, "late", "processed")
                    await self.app(scope, replay, answer_if_still_there)

                await asyncio.shield(asyncio.ensure_future(late()))
                return None
            if kind == "held":
                held: list = []

                async def keep(message):
                    held.append(message)

                await self.app(scope, receive, keep)      # processed (the write is committed) ...
                store.bump(opco, "held", str(next((m["status"] for m in held
                                                   if m["type"] == "http.response.start"), None)))
                await asyncio.sleep(faults.held_seconds)  # ... and only then answered
                try:
                    for m in held:
                        await counting_send(m)
                except Exception:  # the client gave up: nothing to answer to
                    pass
                return None
        if route is not None and prof and "html_gateway" in prof and method == "GET" \
                and route != "oauth_token" and self.sb.html200.draw():
            store.bump(opco, "profile", "html_200")
            return await profiles.html_200()(scope, receive, counting_send)
        return await self.app(scope, receive, counting_send)
