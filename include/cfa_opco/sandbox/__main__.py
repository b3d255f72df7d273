"""python -m cfa_opco.sandbox --port 8085 --config config/sandbox.yaml --db PATH [fault flags]"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .config import DEFAULT_CONFIG, OPCO_CODES, PROJECT_DIR, load_config, opco_settings  # noqa: F401
from .faults import with_preset
from .profiles import parse_profile

# uvicorn's fast loop and HTTP parser when installed (optional)
try:
    import uvloop  # noqa: F401
    LOOP = "uvloop"
except ImportError:
    LOOP = None
try:
    import httptools  # noqa: F401
    HTTP = "httptools"
except ImportError:
    HTTP = None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m cfa_opco.sandbox", description="OPCO sandbox (API CFA-OPCO)")
    ap.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port (default from config, 8085)")
    ap.add_argument("--config", default=None, help="YAML config (default config/sandbox.yaml when present)")
    ap.add_argument("--db", default=None, help="SQLite file (default from config)")
    ap.add_argument("--override", default=None, help="JSON object deep-merged over the config")
    ap.add_argument("--rate-limit", type=float, default=None, help="requests/s per key; 0 = off")
    ap.add_argument("--instant", action="store_true", help="all instruction/payment delays = 0")
    ap.add_argument("--access-log", action="store_true", help="uvicorn access log (slower)")
    ap.add_argument("--profile", default=None,
                    help="response-shape profile of every OPCO, e.g. bare_lists+html_gateway (default strict)")
    f = ap.add_argument_group("fault injection (shares are 0..1)")
    f.add_argument("--fault-preset", choices=["off", "light", "heavy"], default=None,
                   help="named fault mix; the other --fault-* flags apply on top")
    f.add_argument("--fault-seed", type=int, default=None)
    f.add_argument("--fault-503", type=float, default=None, dest="error_503")
    f.add_argument("--fault-429", type=float, default=None, dest="error_429")
    f.add_argument("--fault-latency-ms", type=float, default=None, dest="latency_ms")
    f.add_argument("--fault-latency-jitter-ms", type=float, default=None, dest="latency_jitter_ms")
    f.add_argument("--fault-hang", type=float, default=None, dest="hang")
    f.add_argument("--fault-hang-seconds", type=float, default=None, dest="hang_seconds")
    f.add_argument("--fault-drop", type=float, default=None, dest="drop")
    f.add_argument("--fault-lost", type=float, default=None, dest="lost_response")
    f.add_argument("--fault-lost-mode", choices=["503", "drop"], default=None, dest="lost_response_mode")
    f.add_argument("--fault-502", type=float, default=None, dest="error_502")
    f.add_argument("--fault-504", type=float, default=None, dest="error_504")
    f.add_argument("--fault-held", type=float, default=None, dest="held",
                   help="share of answers held --fault-held-seconds AFTER the request was processed")
    f.add_argument("--fault-held-seconds", type=float, default=None, dest="held_seconds")
    f.add_argument("--fault-retry-after", default=None, dest="retry_after",
                   help="Retry-After of injected 429/503: N or MIN-MAX seconds (e.g. 1-2)")
    f.add_argument("--fault-methods", default=None, help="comma list: POST,GET or ALL")
    f.add_argument("--fault-routes", default=None, help="comma list of route ids (opco_capabilities.yaml)")
    f.add_argument("--fault-opcos", default=None, help="comma list of OPCO codes")
    return ap.parse_args(argv)


def build_config(a) -> dict:
    config = a.config or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None)
    over: dict = json.loads(a.override) if a.override else {}
    cfg = load_config(config, over)
    if a.host:
        cfg["host"] = a.host
    if a.port is not None:
        cfg["port"] = a.port
    if a.db:
        cfg["db"] = a.db
    elif not Path(cfg["db"]).is_absolute():
        cfg["db"] = str(PROJECT_DIR / cfg["db"])   # a config's relative db: from the project root
    if a.rate_limit is not None:
        cfg["rate_limit"]["per_second"] = a.rate_limit
        for o in (cfg.get("opcos") or {}).values():
            if isinstance(o, dict) and "rate_limit" in o:
                o["rate_limit"]["per_second"] = a.rate_limit
    if a.instant:
        cfg["delays"] = {"instruction": 0, "decision": 0, "reglement": 0}
        for o in (cfg.get("opcos") or {}).values():
            if isinstance(o, dict):
                o.pop("delays", None)
    if a.profile is not None:
        parse_profile(a.profile)   # an unknown name stops here, with its French message
        cfg["profile"] = a.profile
        for o in (cfg.get("opcos") or {}).values():
            if isinstance(o, dict):
                o.pop("profile", None)
    if a.fault_preset:
        cfg["faults"] = with_preset(cfg["faults"], a.fault_preset)
    fl = cfg["faults"]
    for k in ("error_503", "error_429", "latency_ms", "latency_jitter_ms", "hang", "hang_seconds", "drop",
              "lost_response", "lost_response_mode", "error_502", "error_504", "held", "held_seconds"):
        v = getattr(a, k)
        if v is not None:
            fl[k] = v
    if a.retry_after:
        lo, _, hi = a.retry_after.partition("-")
        fl["retry_after_min"], fl["retry_after_max"] = float(lo), float(hi or lo)
    for o in OPCO_CODES:
        opco_settings(cfg, o)      # an invalid (per-OPCO) profile stops here
    if a.fault_seed is not None:
        fl["seed"] = a.fault_seed
    for k, attr in (("methods", "fault_methods"), ("routes", "fault_routes"), ("opcos", "fault_opcos")):
        v = getattr(a, attr)
        if v:
            fl[k] = [x.strip() for x in v.split(",") if x.strip()]
    return cfg


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        cfg = build_config(a)
    except ValueError as exc:
        print(f"sandbox : configuration invalide : {exc}", file=sys.stderr)
        return 2
    app, sb = create_app(cfg)
    logging.getLogger("uvicorn.error").info("OPCO sandbox db=%s", sb.store.path)
    kwargs = {k: v for k, v in (("loop", LOOP), ("http", HTTP)) if v}
    uvicorn.run(app, host=cfg["host"], port=int(cfg["port"]), access_log=a.access_log, log_level="warning",
                timeout_graceful_shutdown=3, backlog=4096, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
