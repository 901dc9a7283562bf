"""generation/ is a pure inference library: it never imports the web or queue stacks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import generation

FORBIDDEN = {"django", "celery", "channels"}
PACKAGE = Path(generation.__file__).resolve().parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_roots(source: str, filename: str = "<source>") -> set[str]:
    """Top-level packages named by absolute import statements anywhere in the source."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_import_guard_sees_every_kind_of_import() -> None:
    source = (
        "import os, django.db\n"
        "from celery import shared_task\n"
        "def f():\n"
        "    from channels.layers import get_channel_layer\n"
        "from . import specs\n"
    )
    assert imported_roots(source) == {"os", "django", "celery", "channels"}


def test_the_package_has_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"streaming.py", "loading.py", "prompts.py", "specs.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_does_not_import_django_celery_or_channels(path: Path) -> None:
    roots = imported_roots(path.read_text(encoding="utf-8"), filename=str(path))
    assert not roots & FORBIDDEN, f"{path.name} imports {sorted(roots & FORBIDDEN)}"


def test_importing_every_module_loads_no_web_or_queue_package() -> None:
    modules = ", ".join(module_name(path) for path in MODULES)
    code = (
        f"import sys, {modules}\n"
        f"forbidden = {sorted(FORBIDDEN)!r}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(forbidden))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
