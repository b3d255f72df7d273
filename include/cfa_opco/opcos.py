"""The eleven OPCOs' codes, read from the capability table (cheap: DAG files use it)."""
from __future__ import annotations

import functools

from cfa_opco import settings


@functools.lru_cache(maxsize=1)
def opco_codes() -> tuple[str, ...]:
    import yaml

    doc = yaml.safe_load((settings.REFERENCE_DIR / "opco_capabilities.yaml").read_text(encoding="utf-8"))
    return tuple(sorted(doc["opcos"]))
