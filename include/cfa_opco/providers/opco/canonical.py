"""Canonical JSON: the one serialisation whose bytes are sent, hashed and kept as proof.

Sorted keys, UTF-8 (accents kept), no spaces, no NaN. The same payload always gives the
same bytes, so a content hash identifies what was sent across runs, machines and versions.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, UTF-8, no spaces: the bytes that are sent and hashed."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def canonical_text(obj: Any) -> str:
    return canonical_json(obj).decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(obj: Any) -> str:
    """The SHA-256 of an object's canonical JSON."""
    return sha256_hex(canonical_json(obj))
