"""Reference data the rules check against, read once per process from reference/*.csv
and the rule catalogue (reference/quality_rules.yaml). Nothing here is a constant in code:
the SMIC, the pay grid, the IDCC→OPCO table and the active RNCP catalogue are dated or
versioned data files."""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from cfa_opco import settings

CATALOGUE = settings.REFERENCE_DIR / "quality_rules.yaml"


def _csv(name: str) -> list[dict]:
    with open(settings.REFERENCE_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Reference:
    idcc_opco: dict            # idcc (4 chars) -> opco code
    formations: dict           # rncp -> cfd (active catalogue)
    smic_dates: dict           # territoire -> np.ndarray[datetime64[D]] (sorted)
    smic_values: dict          # territoire -> np.ndarray[float] (monthly, 35 h)
    pay_grid: np.ndarray       # [year 1..4, age 0..150] -> minimum % of the SMIC

    def smic_on(self, territoire: str, days: np.ndarray) -> np.ndarray:
        """Monthly SMIC in force on each day (NaN when none is known)."""
        dates, values = self.smic_dates[territoire], self.smic_values[territoire]
        idx = np.searchsorted(dates, days, side="right") - 1
        out = np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)
        return np.where(np.isnat(days), np.nan, out)


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    idcc = {r["idcc"].strip().zfill(4): r["opco_code"].strip() for r in _csv("idcc_opco.csv")}
    formations = {r["rncp"].strip(): r["cfd"].strip() for r in _csv("formations.csv")}
    smic_dates, smic_values = {}, {}
    rows = sorted((r["territoire"], r["date_effet"], float(r["mensuel_brut_35h"])) for r in _csv("smic.csv"))
    for terr in {r[0] for r in rows}:
        sel = [r for r in rows if r[0] == terr]
        smic_dates[terr] = np.array([r[1] for r in sel], dtype="datetime64[D]")
        smic_values[terr] = np.array([r[2] for r in sel], dtype=float)
    grid = np.full((5, 151), np.nan)
    for r in _csv("remuneration_grid.csv"):
        y, lo, hi = int(r["annee_contrat"]), int(r["age_min"]), min(int(r["age_max"]), 150)
        grid[y, lo:hi + 1] = float(r["taux_min_smic"])
    return Reference(idcc, formations, smic_dates, smic_values, grid)


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, dict]:
    """{code: {severity, domain, seeded, label}} from the YAML catalogue."""
    doc = yaml.safe_load(Path(CATALOGUE).read_text(encoding="utf-8")) or {}
    return {code: dict(spec or {}) for code, spec in (doc.get("rules") or {}).items()}
