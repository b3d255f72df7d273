"""The hook's own HTTP/1.1 transport against the client libraries we could keep instead.

    .venv/bin/python bench/bench_transport.py [--requests 6000] [--threads 16]

Same sandbox (a subprocess, rate limit off), same pre-encoded dossier payloads, same number of
threads, keep-alive on every side; each client POSTs its own share of distinct dossiers:

- ``own``: :class:`cfa_opco.providers.opco.transport.Transport` (what OpcoHook uses);
- ``httpx``: one shared ``httpx.Client`` (HTTP/1.1, a connection pool as large as the threads);
- ``requests``: one ``requests.Session`` per thread (what providers-http's HttpHook gives each
  task), pool as large as the threads.

Prints ``transport_own_posts_per_s``, ``transport_httpx_to_own_ratio``,
``transport_requests_to_own_ratio`` and the client CPU per request of each (ms): the sandbox
runs in another process, so this process's CPU time is the client's alone. The clients take
turns three times (own, httpx, requests, own, ...) and the best round of each is kept, so
a noisy moment on the 2 cores does not decide between them.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import threading
import time

import httpx
import requests
from requests.adapters import HTTPAdapter

from cfa_opco.providers.opco.canonical import canonical_json
from cfa_opco.providers.opco.transport import Transport
from cfa_opco.sandbox import sample_dossier
from cfa_opco.sandbox.testing import demo_headers, run_sandbox

OPCO, SIREN = "atlas", "775672272"
_counter = itertools.count()


def payloads(n: int, tag: str) -> list[bytes]:
    tpl = sample_dossier(OPCO, SIREN)
    out = []
    for _ in range(n):
        tpl["numeroInterne"] = f"TR{tag}-{next(_counter):09d}"
        out.append(canonical_json(tpl))
    return out


def run_own(url: str, headers: dict, bodies: list[bytes], threads: int) -> int:
    transport = Transport((3.05, 30))
    try:
        def send(body: bytes) -> int:
            return transport.request("POST", url, body=body, headers=headers).status
        with cf.ThreadPoolExecutor(threads) as pool:
            return sum(1 for s in pool.map(send, bodies) if 200 <= s < 300)
    finally:
        transport.close()


def run_httpx(url: str, headers: dict, bodies: list[bytes], threads: int) -> int:
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(limits=limits, timeout=30, trust_env=False) as client:
        def send(body: bytes) -> int:
            return client.post(url, content=body, headers=headers).status_code
        with cf.ThreadPoolExecutor(threads) as pool:
            return sum(1 for s in pool.map(send, bodies) if 200 <= s < 300)


def run_requests(url: str, headers: dict, bodies: list[bytes], threads: int) -> int:
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.trust_env = False
            s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=threads))
            with lock:
                sessions.append(s)
        return s

    def send(body: bytes) -> int:
        return session().post(url, data=body, headers=headers, timeout=30).status_code
    try:
        with cf.ThreadPoolExecutor(threads) as pool:
            return sum(1 for s in pool.map(send, bodies) if 200 <= s < 300)
    finally:
        for s in sessions:
            s.close()


CLIENTS = {"own": run_own, "httpx": run_httpx, "requests": run_requests}


def measure(fn, url: str, headers: dict, bodies: list[bytes], threads: int) -> tuple[float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = fn(url, headers, bodies, threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if ok != len(bodies):
        raise SystemExit(f"{fn.__name__}: {len(bodies) - ok} POSTs not accepted")
    return len(bodies) / wall, cpu / len(bodies) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6000, help="POSTs per client and round")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dossiers", type=int, default=None, help="ignored (python -m bench passes it)")
    a = ap.parse_args()
    with run_sandbox(instant=True, rate_limit=0) as sbx:
        url = sbx.api(OPCO) + "/v1/dossiers"
        headers = {**demo_headers(OPCO, SIREN), "Content-Type": "application/json; charset=utf-8"}
        for name, fn in CLIENTS.items():       # warm every client and the server once
            measure(fn, url, headers, payloads(300, "W" + name[0]), a.threads)
        best = {name: (0.0, float("inf")) for name in CLIENTS}
        for rnd in range(a.rounds):
            for name, fn in CLIENTS.items():
                rps, cpu_ms = measure(fn, url, headers, payloads(a.requests, f"{rnd}{name[0]}"), a.threads)
                print(f"# round {rnd + 1} {name}: {rps:.0f} POSTs/s, {cpu_ms:.3f} ms client CPU per POST")
                best[name] = (max(best[name][0], rps), min(best[name][1], cpu_ms))
    own = best["own"][0]
    print(f"transport_own_posts_per_s: {own:.1f}")
    print(f"transport_httpx_to_own_ratio: {best['httpx'][0] / own:.2f}")
    print(f"transport_requests_to_own_ratio: {best['requests'][0] / own:.2f}")
    for name in CLIENTS:
        print(f"transport_{name}_client_cpu_ms_per_post: {best[name][1]:.3f}")


if __name__ == "__main__":
    main()
