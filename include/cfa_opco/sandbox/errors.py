"""The sandbox's API error and the parser of time values, shared by the norm's routes
(:mod:`.app`) and the introspection routes (:mod:`.introspection`) without an import cycle."""
from __future__ import annotations

import datetime as dt

from .store import to_us


class ApiError(Exception):
    def __init__(self, status: int, code: str, champ: str | None, message: str,
                 headers: dict | None = None, errors: list | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or [{"code": code, "champ": champ, "message": message}]
        self.headers = headers


def parse_time(value: str | None, champ: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            d = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.timezone.utc)
        else:
            d = dt.datetime.fromisoformat(value)
        return to_us(d)
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, "FORMAT", champ, f"{champ} doit être une date ou un horodatage ISO-8601")
