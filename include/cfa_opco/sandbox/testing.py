"""Start the real sandbox in a subprocess for tests and benchmarks.

    from cfa_opco.sandbox.testing import run_sandbox

    with run_sandbox(overrides={"rate_limit": {"per_second": 0}}, instant=True) as sbx:
        url = sbx.api("akto")            # http://127.0.0.1:PORT/akto/ApiEchangeCFA
        sbx.set_faults(error_503=0.2, methods=["POST"])
        print(sbx.creations("akto"))

The server runs ``python -m cfa_opco.sandbox`` with a config file (the project's
config/sandbox.yaml by default) deep-merged with ``overrides``; it is stopped with
SIGTERM (then SIGKILL) when the block exits."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from .config import DEFAULT_CONFIG

SOFTWARE_HEADERS = {"EDITEUR": "cfa-opco-tests", "LOGICIEL": "cfa-opco-connector", "VERSION": "0.1.0"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_headers(opco: str, siren: str = "775672272", key: str | None = None, **extra: str) -> dict:
    """Headers of a call with the demo key ``demo-<opco>-<siren>``."""
    return {**SOFTWARE_HEADERS, "X-API-KEY": key or f"demo-{opco}-{siren}", **extra}


class SandboxServer:
    """A running sandbox subprocess and a small client of its /_sandbox routes."""

    def __init__(self, config: str | Path | None, db: str | Path, port: int, overrides: dict | None,
                 args: list[str], env: dict | None, log_path: str | Path | None, startup_timeout: float):
        self.config = str(config) if config else (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None)
        self.db_path = str(db)
        self.port = port
        self.overrides = overrides or {}
        self.args = list(args)
        self.env = env
        self.log_path = str(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.admin = httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False)

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> "SandboxServer":
        cmd = [sys.executable, "-m", "cfa_opco.sandbox", "--port", str(self.port), "--db", self.db_path,
               "--host", "127.0.0.1"]
        if self.config:
            cmd += ["--config", self.config]
        if self.overrides:
            cmd += ["--override", json.dumps(self.overrides)]
        cmd += self.args
        env = dict(os.environ, **(self.env or {}))
        if self.log_path:
            self._log = open(self.log_path, "ab")
        out = self._log if self._log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out if self._log else subprocess.PIPE, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = b"" if self._log else (self.proc.stderr.read() if self.proc.stderr else b"")
                raise RuntimeError(f"sandbox exited with {self.proc.returncode}: {err.decode(errors='replace')[-3000:]}")
            try:
                if self.admin.get("/_sandbox/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sandbox not healthy after {self.startup_timeout}s on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: counters flushed, WAL checkpointed), SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL (a crash): what was committed to SQLite survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, **changes: Any) -> "SandboxServer":
        """Stop and start again on the same port and database (``changes``: overrides=, args=)."""
        self.stop()
        if "overrides" in changes:
            self.overrides = changes["overrides"] or {}
        if "args" in changes:
            self.args = list(changes["args"])
        return self.start()

    # ---- URLs ------------------------------------------------------------------
    def api(self, opco: str) -> str:
        """Base URL of one OPCO: http://127.0.0.1:PORT/<opco>/ApiEchangeCFA"""
        return f"{self.base_url}/{opco}/ApiEchangeCFA"

    def token_url(self, opco: str = "akto") -> str:
        return f"{self.base_url}/{opco}/oauth/token"

    # ---- /_sandbox client ------------------------------------------------------
    def _j(self, method: str, path: str, **kw) -> Any:
        r = self.admin.request(method, "/_sandbox" + path, **kw)
        r.raise_for_status()
        return r.json()

    def dossier(self, opco: str, numero_interne: str) -> dict:
        """The dossier as the sandbox holds it (also for OPCOs that serve no read route)."""
        return self._j("GET", "/dossier", params={"opco": opco, "numeroInterne": numero_interne})

    def health(self) -> dict:
        return self._j("GET", "/health")

    def reset(self, keep_settings: bool = False) -> dict:
        return self._j("POST", "/reset", json={"keep_settings": keep_settings})

    def stats(self, opco: str | None = None) -> dict:
        return self._j("GET", "/stats", params={"opco": opco} if opco else None)

    def creations(self, opco: str, siren: str | None = None) -> dict:
        return self._j("GET", "/creations", params={"opco": opco, **({"siren": siren} if siren else {})})

    def conventions(self, opco: str) -> dict:
        """{numeroInterne: {count, last}} of the conventions de formation this OPCO received."""
        return self._j("GET", "/conventions", params={"opco": opco})["conventions"]

    def certificats(self, opco: str) -> list[dict]:
        """[{idCertificat, numeroInterneDossier, typeCertificat, echeance}] this OPCO received."""
        return self._j("GET", "/certificats", params={"opco": opco})["certificats"]

    def factures(self, opco: str) -> dict:
        """{factures: [{numeroInterneFacture, numeroInterneDossier, echeance, montant}], created,
        same_content} — the invoices this OPCO holds, and the identical re-sends it answered 200."""
        return self._j("GET", "/factures", params={"opco": opco})

    def set_faults(self, **faults: Any) -> dict:
        """Replace the fault profile (unspecified shares are 0)."""
        return self._j("PUT", "/faults", json=faults)

    def set_fault_preset(self, name: str, **overrides: Any) -> dict:
        """Replace the fault mix by a preset (``off``, ``light``, ``heavy``), ``overrides``
        (e.g. ``held_seconds=3``, ``methods=["POST"]``) on top."""
        return self._j("PUT", "/faults", json={**overrides, "preset": name})

    def set_profile(self, opco: str | None, name: str | None) -> dict:
        """Response-shape profile (``"bare_lists+html_gateway"``...). ``opco`` None: the
        global profile (per-OPCO profiles are cleared); else that OPCO's (``name`` None:
        back to the global one)."""
        if opco is None:
            return self._j("PUT", "/profiles", json={"profile": name or "strict"})
        return self._j("PUT", f"/profiles/{opco}", json={"profile": name})

    def profiles(self) -> dict:
        """{profile: global, opcos: {opco: effective}, profiles: [names]}"""
        return self._j("GET", "/profiles")

    def duplicates_created(self, opco: str | None = None) -> int:
        """Dossiers created a second time for the same (OPCO, SIREN, numeroInterne): the
        exactly-once violations, for one OPCO or all."""
        st = self.stats(opco)
        if opco:
            return int(st["duplicates_created"])
        return sum(int(v["duplicates_created"]) for v in st.values())

    def clear_faults(self) -> dict:
        return self._j("DELETE", "/faults")

    def settings(self) -> dict:
        return self._j("GET", "/settings")

    def patch_settings(self, **changes: Any) -> dict:
        """Deep-merge into the running config: rate_limit, delays, idempotency, page_size,
        instruction, keys, oauth2, npec, opcos..."""
        return self._j("PATCH", "/settings", json=changes)

    def set_rate_limit(self, per_second: float, burst: float | None = None) -> dict:
        return self.patch_settings(rate_limit={"per_second": per_second, "burst": burst})

    def set_delays(self, instruction: float = 0, decision: float = 0, reglement: float = 0) -> dict:
        return self.patch_settings(delays={"instruction": instruction, "decision": decision,
                                           "reglement": reglement})

    def advance_clock(self, seconds: float) -> dict:
        return self._j("POST", "/clock", json={"advance_seconds": seconds})

    def clock(self) -> dict:
        return self._j("GET", "/clock")

    def seed(self, opco: str, siren: str = "775672272", count: int = 1000, **kw: Any) -> dict:
        """Bulk-load ``count`` dossiers (kw: prefix, start, spread_seconds, outcomes, template)."""
        return self._j("POST", "/seed", json={"opco": opco, "siren": siren, "count": count, **kw})

    def dossier(self, opco: str, numero_interne: str) -> dict:
        return self._j("GET", "/dossier", params={"opco": opco, "numeroInterne": numero_interne})

    def flush(self) -> dict:
        return self._j("POST", "/flush")

    def close(self) -> None:
        self.stop()
        self.admin.close()


@contextlib.contextmanager
def run_sandbox(config: str | Path | None = None, db: str | Path | None = None, *,
                overrides: dict | None = None, port: int | None = None, instant: bool = False,
                rate_limit: float | None = None, args: list[str] | tuple = (), env: dict | None = None,
                log_path: str | Path | None = None, startup_timeout: float = 30.0) -> Iterator[SandboxServer]:
    """Start ``python -m cfa_opco.sandbox`` on a free port; yield a :class:`SandboxServer`
    (``.base_url``, ``.api(opco)``, /_sandbox helpers); stop it on exit.

    config: YAML file (default: the project's config/sandbox.yaml); db: SQLite file
    (default: a fresh temporary file, removed on exit); overrides: dict deep-merged over
    the config; instant: all delays 0; rate_limit: per-key requests/s (0 = off);
    args: extra CLI flags (e.g. ["--fault-503", "0.1"])."""
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="opco-sandbox-")
        db = Path(tmp.name) / "sandbox.db"
    extra = list(args)
    if instant:
        extra.append("--instant")
    if rate_limit is not None:
        extra += ["--rate-limit", str(rate_limit)]
    server = SandboxServer(config, db, port or free_port(), overrides, extra, env, log_path, startup_timeout)
    try:
        server.start()
        yield server
    finally:
        server.close()
        if tmp is not None:
            tmp.cleanup()
