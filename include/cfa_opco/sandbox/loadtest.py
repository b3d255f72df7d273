"""Measure what a sandbox sustains with wrk (the same way for every benchmark).

    from cfa_opco.sandbox.loadtest import measure_post_capacity, measure_read_capacity
    rps = measure_post_capacity(sbx.base_url, sample_dossier("atlas"), seconds=10, opco="atlas")

The rate limit must be off on the measured sandbox (``run_sandbox(rate_limit=0)``).
Figures count successful answers (2xx) per second over the run."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from .testing import demo_headers

_RESULT = re.compile(r"^WRKJSON (.*)$", re.M)


def ensure_wrk() -> str:
    """Path of wrk; installs the Debian package when missing and running as root."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which("wrk")
        if not path:
            subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk not found (Debian package 'wrk')")
    return path


def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
'''

_SETUP = r'''
local counter = 0
local threads = {}
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end
'''


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok_rps(self) -> float:
        return max(0, self.requests - self.non_2xx) / self.duration_s if self.duration_s else 0.0


def run_wrk(url: str, lua: str, seconds: float, threads: int = 1, connections: int = 32,
            timeout_s: float = 10.0) -> WrkResult:
    wrk = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
        script = fh.name
    try:
        out = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, int(seconds))}s",
                              "--timeout", f"{int(timeout_s)}s", "-s", script, url],
                             capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script)
    m = _RESULT.search(out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    d = json.loads(m.group(1))
    return WrkResult(d["requests"], d["duration_us"] / 1e6, d["status_errors"],
                     d["connect"] + d["read"] + d["write"] + d["timeout"], d["p50_us"] / 1000, d["p99_us"] / 1000)


def _headers_lua(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()) + "}"


def post_lua(path: str, payload_template: dict, headers: dict[str, str], prefix: str) -> str:
    """Each request a distinct numeroInterne: <prefix>-<thread>-<counter>."""
    body = json.dumps(dict(payload_template, numeroInterne="__NI__"), ensure_ascii=False)
    before, after = body.split('"__NI__"', 1)
    h = dict(headers, **{"Content-Type": "application/json"})
    return _SETUP + f'''
local n = 0
local before = {_lua_str(before)}
local after = {_lua_str(after)}
local headers = {_headers_lua(h)}
request = function()
  n = n + 1
  local ni = string.format("%s-%d-%09d", {_lua_str(prefix)}, tid or 0, n)
  return wrk.format("POST", {_lua_str(path)}, headers, before .. '"' .. ni .. '"' .. after)
end
''' + _DONE


def get_lua(paths: list[str], headers: dict[str, str]) -> str:
    """Cycles through ``paths`` (e.g. etats pages 1..N)."""
    plist = "{" + ", ".join(_lua_str(p) for p in paths) + "}"
    return _SETUP + f'''
local n = 0
local paths = {plist}
local headers = {_headers_lua(headers)}
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n - 1) % #paths + 1], headers, nil)
end
''' + _DONE


def measure_post_capacity(base_url: str, payload_template: dict, seconds: float = 10.0, *, opco: str = "atlas",
                          siren: str = "775672272", headers: dict | None = None, version: str = "v1",
                          threads: int = 1, connections: int = 32, prefix: str | None = None,
                          detail: bool = False) -> Any:
    """Dossier POSTs/s (2xx) a sandbox at ``base_url`` (http://127.0.0.1:PORT) sustains, each
    with a distinct numeroInterne. ``payload_template``: a valid dossier of ``opco``/``siren``."""
    h = headers or demo_headers(opco, siren)
    path = f"/{opco}/ApiEchangeCFA/{version}/dossiers"
    prefix = prefix or f"BENCH{os.getpid()}x{int.from_bytes(os.urandom(3), 'big')}"
    res = run_wrk(base_url.rstrip("/") + path, post_lua(path, payload_template, h, prefix), seconds, threads,
                  connections)
    return res if detail else res.ok_rps


def measure_read_capacity(base_url: str, seconds: float = 10.0, *, opco: str = "atlas", siren: str = "775672272",
                          paths: list[str] | None = None, pages: int = 100, page_size: int = 100,
                          headers: dict | None = None, threads: int = 1, connections: int = 32,
                          detail: bool = False) -> Any:
    """GETs/s (2xx): by default pages 1..``pages`` of /v2/dossiers/etats (``page_size`` each);
    pass ``paths`` (relative to base_url) for anything else, e.g. per-dossier reads."""
    h = headers or demo_headers(opco, siren)
    if paths is None:
        paths = [f"/{opco}/ApiEchangeCFA/v2/dossiers/etats?numeroPage={p}&taillePage={page_size}"
                 for p in range(1, pages + 1)]
    res = run_wrk(base_url.rstrip("/") + paths[0], get_lua(paths, h), seconds, threads, connections)
    return res if detail else res.ok_rps
