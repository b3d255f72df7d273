"""The OPCO provider stands alone: nothing under providers/opco imports the rest of cfa_opco,
not even inside a function (the operator, sensor and trigger take callables / dotted paths)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cfa_opco.providers.opco as provider

ROOT = Path(provider.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            out.append((node.lineno, str(node.args[0].value)))
    return out


def test_no_project_import_inside_the_provider():
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 10
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files for line, mod in _imports(p)
           if (mod == "cfa_opco" or mod.startswith("cfa_opco.")) and not mod.startswith("cfa_opco.providers.opco")]
    assert bad == []


def test_the_checker_sees_a_function_level_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from cfa_opco.followup import sync_states\n    import cfa_opco.db\n")
    assert [m for _, m in _imports(f)] == ["cfa_opco.followup", "cfa_opco.db"]


def test_provider_modules_load_without_the_project():
    """Import every provider module in a fresh interpreter where any other cfa_opco module is
    poisoned: an import of the project anywhere at module level fails."""
    code = (
        "import sys, importlib, importlib.abc, pkgutil\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.startswith('cfa_opco.') and not name.startswith('cfa_opco.providers'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cfa_opco.providers.opco as p\n"
        "for m in pkgutil.walk_packages(p.__path__, 'cfa_opco.providers.opco.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
