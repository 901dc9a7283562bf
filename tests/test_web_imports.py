"""The web side never imports torch, transformers or the workers: settings, every module of
every app (but migrations and management commands, which run as their own processes),
the urls and the ASGI application, imported in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "workers")

PROBE = """
import importlib, json, os, pkgutil, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
import django
django.setup()
heavy = {heavy}
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
culprit = {{}}
names = []
import webapp
for info in pkgutil.walk_packages(webapp.__path__, "webapp."):
    if ".migrations" in info.name or ".management.commands." in info.name:
        continue
    names.append(info.name)
names += ["webapp.urls", "webapp.asgi"]  # last: each module is blamed for its own imports
for name in names:
    before = set(loaded())
    importlib.import_module(name)
    for module in set(loaded()) - before:
        culprit.setdefault(module.split(".")[0], name)
print(json.dumps({{"imported": len(names), "heavy": culprit}}))
"""


def test_the_web_side_imports_no_torch_transformers_or_workers() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "HF_HUB_OFFLINE": "1"}
    probe = PROBE.format(heavy=repr(HEAVY))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["imported"] > 60  # the walk reached every app
    assert found["heavy"] == {}, f"first imported by: {found['heavy']}"
