"""Great Expectations Data Docs styled offline, from local copies of their CSS and JS.

GX 1.x writes a ``static/`` folder next to the Data Docs pages (its own stylesheet,
fonts and images) but its pages load Bootstrap 4.3.1, bootstrap-table 1.19.1, jQuery
3.7.1, Popper 1.12.9 and Font Awesome 6.6.0 from CDNs: offline (a CFA's network, the
Airflow UI behind a proxy) they render unstyled. :func:`localize_data_docs` copies the
same versions, vendored in ``assets/`` with their licence headers (licences in
``assets/licenses/``), into ``<data docs>/static/vendor/`` and points every page at them.

What is not vendored is removed from the pages: Vega (profiling charts only, never
rendered by the gate's validations), the bootstrap-datepicker filter (no date column
filters) and the ``bootstrap-prefers-dark`` theme (optional dark mode), and the GX logo
fetched from GX's web assets points at the local ``static/images`` copy.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
VENDOR = "static/vendor"

# CDN file name -> local file (relative to static/vendor/)
LOCAL = {
    "bootstrap.min.css": "css/bootstrap.min.css",
    "bootstrap.min.js": "js/bootstrap.min.js",
    "bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "bootstrap-table-filter-control.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.min.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.min.js": "js/bootstrap-table-filter-control.min.js",
    "jquery-3.7.1.min.js": "js/jquery.min.js",
    "popper.min.js": "js/popper.min.js",
    "all.min.css": "css/fontawesome.all.min.css",
}
_TAG = re.compile(r"""<(script|link)\b[^>]*?\b(?:src|href)=["'](https?://[^"']+)["'][^>]*>(?:\s*</script>)?""",
                  re.IGNORECASE)
_REMOTE_IMAGES = re.compile(r"""(["'])https://great-expectations-web-assets\.[^"']*/([^"'/?]+)(?:\?[^"']*)?\1""")


def _rewrite(page: Path, docs_root: Path) -> bool:
    text = page.read_text(encoding="utf-8")
    if "http" not in text:
        return False
    to_root = os.path.relpath(docs_root, page.parent).replace(os.sep, "/")

    def local(match: re.Match) -> str:
        tag, url = match.group(1).lower(), match.group(2)
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        target = LOCAL.get(name)
        if target is None:
            return ""   # not vendored: dropped (see the module's docstring)
        href = f"{to_root}/{VENDOR}/{target}"
        if tag == "script":
            return f'<script src="{href}"></script>'
        return f'<link rel="stylesheet" href="{href}"/>'

    new = _TAG.sub(local, text)
    new = _REMOTE_IMAGES.sub(lambda m: f"{m.group(1)}{to_root}/static/images/{m.group(2)}{m.group(1)}", new)
    if new != text:
        page.write_text(new, encoding="utf-8")
        return True
    return False


def localize_data_docs(docs_root: Path) -> int:
    """Copy the vendored assets into the Data Docs folder and rewrite its pages to use them;
    return the number of pages rewritten."""
    docs_root = Path(docs_root)
    if not docs_root.is_dir():
        return 0
    shutil.copytree(ASSETS, docs_root / VENDOR, dirs_exist_ok=True)
    return sum(_rewrite(page, docs_root) for page in docs_root.rglob("*.html"))


def remote_assets(html_text: str) -> list[str]:
    """The http(s) URLs a page loads CSS or JS from (the tests' and the checks' probe)."""
    return [m.group(2) for m in _TAG.finditer(html_text)]
