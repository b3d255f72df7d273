"""OPCO connections, parsed in one place for the sync hook, the async hook and the trigger.

- :func:`airflow_connection` / :func:`cached_connections` — an Airflow connection looked up
  once per task and served to its worker threads (the Task SDK's supervisor is reachable
  from the main thread only). ``cfa_opco.db.connect`` re-exports them.
- :func:`parse_connection` — a connection object → :class:`ConnInfo` (base URL, key, SIREN,
  OPCO code, capabilities, software headers, OAuth2 client, proxy, pacing rate, timeouts).

Connection (type http): host = base URL ending in /ApiEchangeCFA, password = the key,
extra: siren, rate_limit_per_second, proxy, connect_timeout (s, default 3), read_timeout
(s, default 5), and for AKTO oauth_client_id, oauth_client_secret, oauth_token_path (or
oauth_token_url). Nothing here imports the rest of cfa_opco.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit

from .capabilities import Capabilities
from .exceptions import OpcoAuthError, OpcoError
from .norm import CONN_TYPE, DEFAULT_SOFTWARE, HEADER_KEY, parse_conn_id

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0

_CACHE: dict[str, object] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_USERS = 0


@contextlib.contextmanager
def cached_connections() -> Iterator[None]:
    """Within the block, Airflow connections looked up once are served from memory.

    Inside a task the Task SDK fetches connections through its supervisor, which worker
    threads cannot reach: a task looks its connections up in its main thread within this
    block, and the threads it starts there are served from the cache. Nothing outlives
    the block (a rotated key is read afresh by the next task)."""
    global _CACHE_USERS
    with _CACHE_LOCK:
        _CACHE_USERS += 1
    try:
        yield
    finally:
        with _CACHE_LOCK:
            _CACHE_USERS -= 1
            if _CACHE_USERS == 0:
                _CACHE.clear()


def env_connection_ids() -> set[str]:
    """OPCO connection ids defined as AIRFLOW_CONN_OPCO_* environment variables."""
    ids = (name[len("AIRFLOW_CONN_"):].lower() for name in os.environ if name.startswith("AIRFLOW_CONN_OPCO_"))
    return {i for i in ids if parse_conn_id(i)[0]}


def airflow_connection(conn_id: str):
    """An Airflow connection (from the cache of an enclosing :func:`cached_connections`)."""
    with _CACHE_LOCK:
        if conn_id in _CACHE:
            return _CACHE[conn_id]
    # Importing airflow fixes its configuration (AIRFLOW_HOME...) for the process: command-line
    # tools import this module through cfa_opco.db.connect before airflow_env.apply_env (proofs
    # export) or never need Airflow at all (make seed, migrations), so it is imported on first use.
    from airflow.sdk import BaseHook  # lazy: Airflow's config is read at import (see above)

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:
        # outside a task (a command line): the secrets backends and the metadata database
        from airflow.models.connection import Connection  # lazy: Airflow's config (see above)

        conn = Connection.get_connection_from_secrets(conn_id)
    with _CACHE_LOCK:
        if _CACHE_USERS:
            _CACHE[conn_id] = conn
    return conn


def _seconds(value: Any, default: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if v > 0 else default


@dataclass
class ConnInfo:
    conn_id: str
    base: str
    key: str = field(repr=False)
    code: str
    siren: str | None
    caps: Capabilities
    software: dict
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    proxy: str | None = field(default=None, repr=False)
    rate: float | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    pacer: Any = field(default=None, repr=False, compare=False)     # set by the sync hook (threads share it per key)

    def headers(self) -> dict[str, str]:
        """The norm's headers of every API call (key and software), no token."""
        sw = self.software
        return {HEADER_KEY: self.key, "EDITEUR": sw["editeur"], "LOGICIEL": sw["logiciel"],
                "VERSION": sw["version"], "Accept": "application/json"}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.key, self.client_secret) if s)

    # dict-style access kept for callers of the former ``_conn_info()`` dict
    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


def parse_connection(conn, conn_id: str, *, software: dict | None = None, rate: float | None = None,
                     timeout: float | tuple | None = None) -> ConnInfo:
    """An Airflow connection → ConnInfo. ``software`` overrides the extra's editeur/logiciel/version;
    ``rate`` overrides rate_limit_per_second; ``timeout`` (s or (connect, read)) overrides the
    extra's connect_timeout/read_timeout. French errors naming the connection."""
    # The UI's connection form (conn-fields of get_provider_info) may store its fields
    # prefixed "extra__opco__<name>"; a JSON extra written by hand uses the bare names.
    extra = {k.removeprefix(f"extra__{CONN_TYPE}__"): v for k, v in (conn.extra_dejson or {}).items()
             if v not in (None, "")}
    code_from_id, siren_from_id = parse_conn_id(conn_id)
    host = (conn.host or "").strip()
    if "://" not in host:
        scheme = conn.schema or "https"
        host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    base = host.rstrip("/")
    code = (extra.get("opco") or code_from_id or "").lower()
    if not code:
        raise OpcoError(f"connexion {conn_id} : OPCO inconnu (nom attendu opco_<code>_<siren> ou extra 'opco')")
    # a key per establishment (opco_<code>_<siret>) belongs to the SIRET's company: its SIREN
    # is the SIRET's first 9 digits (what /v2/cfakeyinfo and the proofs name)
    siren = str(extra.get("siren") or siren_from_id or "")[:9] or None
    if not conn.password:
        raise OpcoAuthError(code, siren, None, "aucune clé API dans la connexion", conn_id=conn_id)
    r = rate if rate is not None else extra.get("rate_limit_per_second")
    r = float(r) if r not in (None, "", 0, "0") else None
    sw = dict(DEFAULT_SOFTWARE)
    for k in sw:
        if extra.get(k):
            sw[k] = str(extra[k])
    sw.update({k.lower(): str(v) for k, v in (software or {}).items() if v})
    split = urlsplit(base)
    token_url = extra.get("oauth_token_url")
    if not token_url and extra.get("oauth_token_path"):
        token_url = f"{split.scheme}://{split.netloc}{extra['oauth_token_path']}"
    connect_t = _seconds(extra.get("connect_timeout"), DEFAULT_CONNECT_TIMEOUT)
    read_t = _seconds(extra.get("read_timeout"), DEFAULT_READ_TIMEOUT)
    if timeout is not None:
        connect_t, read_t = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return ConnInfo(conn_id=conn_id, base=base, key=conn.password, code=code, siren=siren,
                    caps=Capabilities.for_opco(code), software=sw, client_id=extra.get("oauth_client_id"),
                    client_secret=extra.get("oauth_client_secret"), token_url=token_url,
                    proxy=extra.get("proxy") or None, rate=r, connect_timeout=float(connect_t),
                    read_timeout=float(read_t))


def load_path(path: str) -> Any:
    """``package.module.attr`` or ``package.module:attr`` → the object (callables given by name
    to operators, sensors and triggers, so the provider names no project module)."""
    mod, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not mod or not attr:
        raise ValueError(f"chemin d'objet invalide : {path!r} (attendu paquet.module.nom)")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
