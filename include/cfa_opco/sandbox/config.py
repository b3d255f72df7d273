"""Configuration of the OPCO sandbox: defaults, YAML file, CLI/runtime overrides.

The capability table (``opco_capabilities.yaml``) and the IDCC→OPCO table are read from
the package's reference folder at start-up (never duplicated here)."""
from __future__ import annotations

import copy
import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cfa_opco.providers.opco.capabilities import CAPABILITIES_FILE as CAPABILITIES_YAML
from cfa_opco.providers.opco.norm import OPCO_CODES  # noqa: F401  (re-exported)

from .faults import with_preset
from .profiles import parse_profile

PROJECT_DIR = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = PROJECT_DIR / "config" / "sandbox.yaml"   # the sandbox's settings (python -m cfa_opco.sandbox)

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = PACKAGE_DIR.parent / "reference"
CAPABILITIES_FILE = CAPABILITIES_YAML
IDCC_FILE = REFERENCE_DIR / "idcc_opco.csv"


DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8085,
    "db": "var/sandbox/opco_sandbox.db",
    "capabilities_file": None,
    "idcc_file": None,
    "idempotency": True,
    "max_body_bytes": 2_000_000,
    "max_document_bytes": 20_000_000,
    "page_size": {"default": 100, "max": 1000},
    "rate_limit": {"per_second": 10.0, "burst": None, "retry_after": "integer"},
    "delays": {"instruction": 5.0, "decision": 10.0, "reglement": 30.0},
    # the OPCO's own instruction of an accepted invoice (cfa_opco.sandbox.invoicing): shares of
    # invoices rejected (with a reason) or paid in part, chosen by a hash of the invoice number
    "factures": {"rejet": 0.0, "partiel": 0.0, "part_reglee": 0.8, "seed": 77},
    "instruction": {"require_convention": True, "avenant_requires_convention": False,
                    "age_max": 29, "certificat_requis": False},
    "oauth2": {"token_lifetime_seconds": 3600, "clients": {}},
    "npec": {"default": 8000.0, "opcos": {}},
    "keys": [],
    "faults": {
        "seed": 1234, "methods": ["ALL"], "routes": [], "opcos": [],
        "error_503": 0.0, "error_429": 0.0, "latency_ms": 0.0, "latency_jitter_ms": 0.0,
        "hang": 0.0, "hang_seconds": 30.0, "drop": 0.0,
        "lost_response": 0.0, "lost_response_mode": "503",
        "error_502": 0.0, "error_504": 0.0, "held": 0.0, "held_seconds": 35.0, "late": 0.0, "late_seconds": 3.0,
        "retry_after_min": 1, "retry_after_max": 1, "preset": None,
    },
    # response-shape profile (cfa_opco.sandbox.profiles), global; per OPCO in opcos.<opco>.profile
    "profile": "strict",
    "profile_options": {"html_200_share": 0.02, "seed": 4321},
    # per-OPCO overrides of: idempotency, page_size, rate_limit, delays, instruction, profile
    "opcos": {},
}

PER_OPCO_KEYS = ("idempotency", "page_size", "rate_limit", "delays", "instruction", "profile", "factures")


def deep_merge(base: dict, extra: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    data: dict = {}
    if path:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    cfg = deep_merge(DEFAULTS, data)
    cfg = deep_merge(cfg, overrides)
    preset = (cfg.get("faults") or {}).get("preset")
    if preset:   # the preset's values, then the keys written next to it (file, then overrides)
        explicit = {k: v for src in (data.get("faults"), (overrides or {}).get("faults")) for k, v in (src or {}).items()
                    if k != "preset"}
        cfg["faults"] = with_preset(cfg["faults"], preset, explicit)
    return cfg


def load_capabilities(path: str | Path | None = None) -> dict[str, dict]:
    with open(path or CAPABILITIES_FILE, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    out = {}
    for code, spec in data["opcos"].items():
        out[code] = {"name": spec.get("name", code), "routes": frozenset(spec.get("routes", [])),
                     "oauth2_v2": bool(spec.get("oauth2_v2", False))}
    return out


def load_idcc(path: str | Path | None = None) -> dict[str, str]:
    with open(path or IDCC_FILE, encoding="utf-8", newline="") as fh:
        return {row["idcc"].strip(): row["opco_code"].strip().lower() for row in csv.DictReader(fh)}


@dataclass
class KeyInfo:
    """A key issued to a company (SIREN) or to one of its establishments (``siret`` set:
    it sends that establishment's dossiers only)."""
    key: str
    opco: str
    siren: str
    expires: dt.date
    siret: str | None = None

    def as_dict(self) -> dict:
        out = {"key": self.key, "opco": self.opco, "siren": self.siren,
               "dateFinValidite": self.expires.isoformat()}
        if self.siret:
            out["siret"] = self.siret
        return out


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def build_keys(entries: list[dict], today: dt.date) -> dict[str, KeyInfo]:
    """``expires`` (absolute date) or ``expires_in_days`` (relative to the sandbox's start
    date, so a demo "almost expired" key stays near expiry whatever the day). A key with a
    ``siret`` is an establishment's key (its ``siren``, when absent, is the SIRET's first 9
    digits)."""
    out: dict[str, KeyInfo] = {}
    for e in entries or []:
        if e.get("expires_in_days") is not None:
            exp = today + dt.timedelta(days=int(e["expires_in_days"]))
        elif e.get("expires") is not None:
            exp = _parse_date(e["expires"])
        else:
            exp = dt.date(9999, 12, 31)
        siret = str(e["siret"]) if e.get("siret") else None
        siren = str(e.get("siren") or (siret or "")[:9])
        if siret and siret[:9] != siren:
            raise ValueError(f"key {e['key']}: SIRET {siret} does not belong to SIREN {siren}")
        out[str(e["key"])] = KeyInfo(str(e["key"]), str(e["opco"]).lower(), siren, exp, siret)
    return out


@dataclass
class OpcoSettings:
    idempotency: bool
    page_default: int
    page_max: int
    rate: float
    burst: float
    retry_after_decimal: bool
    d_instruction_us: int
    d_decision_us: int
    d_reglement_us: int
    require_convention: bool
    avenant_requires_convention: bool
    age_max: int
    npec_default: float | None
    npec_rncp: dict
    profile: frozenset = frozenset()
    certificat_requis: bool = False
    facture_rejet: float = 0.0
    facture_partiel: float = 0.0
    facture_part_reglee: float = 0.8
    facture_seed: int = 77


def opco_settings(cfg: dict, opco: str) -> OpcoSettings:
    eff = {k: cfg[k] for k in PER_OPCO_KEYS}
    eff = deep_merge(eff, {k: v for k, v in (cfg.get("opcos", {}).get(opco) or {}).items()
                           if k in PER_OPCO_KEYS})
    rl = eff["rate_limit"] or {}
    rate = float(rl.get("per_second") or 0)
    burst = rl.get("burst")
    burst = float(burst) if burst else max(1.0, rate)
    d = eff["delays"]
    npec = cfg.get("npec", {})
    npec_opco = (npec.get("opcos") or {}).get(opco) or {}
    npec_default = npec_opco["default"] if "default" in npec_opco else npec.get("default")
    us = lambda s: int(round(float(s or 0) * 1_000_000))  # noqa: E731
    return OpcoSettings(
        idempotency=bool(eff["idempotency"]),
        page_default=int(eff["page_size"]["default"]), page_max=int(eff["page_size"]["max"]),
        rate=rate, burst=burst, retry_after_decimal=str(rl.get("retry_after", "integer")) == "decimal",
        d_instruction_us=us(d.get("instruction")), d_decision_us=us(d.get("decision")),
        d_reglement_us=us(d.get("reglement")),
        require_convention=bool(eff["instruction"].get("require_convention", True)),
        avenant_requires_convention=bool(eff["instruction"].get("avenant_requires_convention", False)),
        age_max=int(eff["instruction"].get("age_max", 29)),
        certificat_requis=bool(eff["instruction"].get("certificat_requis", False)),
        npec_default=None if npec_default is None else float(npec_default),
        npec_rncp=dict(npec_opco.get("rncp") or {}),
        profile=parse_profile(eff.get("profile")),
        facture_rejet=float((eff.get("factures") or {}).get("rejet") or 0),
        facture_partiel=float((eff.get("factures") or {}).get("partiel") or 0),
        facture_part_reglee=float((eff.get("factures") or {}).get("part_reglee") or 0.8),
        facture_seed=int((eff.get("factures") or {}).get("seed") or 0),
    )


def npec_for(s: OpcoSettings, rncp: str) -> float | None:
    if rncp in s.npec_rncp:
        v = s.npec_rncp[rncp]
        return None if v is None else float(v)
    return s.npec_default
