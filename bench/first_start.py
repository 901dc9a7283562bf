"""Time from `bash scripts/run.sh` on a fresh clone to the first streamed chat token.

Usage: python bench/first_start.py CLONE [--port N]

CLONE is a fresh clone of the repository whose dependencies are installed (`.venv`), with
no `var/` folder: nothing migrated, no model prepared. The script runs the run command
there with a known admin password, logs in, sends a chat message over the WebSocket and
prints when the URL was printed, when the login page answered and when the first token
arrived; then it checks that the Shakespeare GRU is listed as being prepared and refused
meanwhile, waits for its background training to end, asks it once, and stops the run
command with Ctrl-C's signal. The run command's output goes to CLONE.log.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect
from websockets.typing import Origin

PASSWORD = secrets.token_urlsafe(16)  # the admin account of the fresh clone


class Session:
    """A logged-in browser: cookies for pages, the same cookies for the chat socket."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        return str(self.opener.open(self.base + path, timeout=30).read().decode())

    def log_in(self) -> None:
        page = self.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "no CSRF token on the login page"
        form = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)}
        request = urllib.request.Request(  # noqa: S310 - the local run command's URL
            self.base + "/accounts/login/",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Referer": self.base + "/accounts/login/"},
        )
        self.opener.open(request, timeout=30)

    def chat(self, content: str, model: int | None = None, whole: bool = False) -> dict[str, Any]:
        """The first token event (or the done event with `whole`), or the error."""
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        url = self.base.replace("http", "ws") + "/ws/chat/"
        headers = {"Cookie": cookie}
        with connect(url, origin=Origin(self.base), additional_headers=headers, proxy=None) as ws:
            frame: dict[str, Any] = {"type": "message", "content": content, "max_tokens": 24}
            if model is not None:
                frame["model"] = model
            ws.send(json.dumps(frame))
            while True:
                event: dict[str, Any] = json.loads(ws.recv(timeout=600))
                if event["type"] == "error" or event["type"] == "done":
                    return event
                if event["type"] == "token" and not whole:
                    return event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clone", type=Path)
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    clone: Path = args.clone.resolve()
    assert not (clone / "var").exists(), "not a fresh clone: var/ exists"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(ATELIER_PORT=str(args.port), ATELIER_ADMIN_PASSWORD=PASSWORD)
    log_path = clone.with_name(clone.name + ".log")
    started = time.monotonic()

    def stamp(what: str) -> None:
        print(f"{time.monotonic() - started:7.1f} s  {what}", flush=True)

    def output() -> str:
        return log_path.read_text(errors="replace")

    with log_path.open("wb") as log:
        launcher = subprocess.Popen(
            ["bash", "scripts/run.sh"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        while "Atelier is running" not in output():
            assert launcher.poll() is None, output()[-3000:]
            time.sleep(0.2)
        stamp("the URL is printed")
        session = Session(f"http://127.0.0.1:{args.port}")
        while True:
            try:
                session.log_in()
                break
            except OSError:
                time.sleep(0.2)
        stamp("logged in")
        stamp(f"first streamed token: {session.chat('What is the capital of France?')}")
        picker = re.findall(r'<option value="(\d+)"[^>]*>([^<]*)</option>', session.get("/chat/"))
        print("model picker:", [name for _, name in picker])
        gru = next((int(pk) for pk, name in picker if name.startswith("Shakespeare GRU")), None)
        if gru is not None and "being prepared" in dict(picker)[str(gru)]:
            print("the GRU meanwhile:", session.chat("To be", model=gru))
            while "The model preparation process" not in output():  # how it ended
                assert launcher.poll() is None, output()[-3000:]
                time.sleep(2)
            stamp(re.findall(r"The model preparation process[^\n]*", output())[-1])
            print("the GRU after:", session.chat("To be, or not", model=gru, whole=True))
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=60)
        stamp(f"stopped (exit status {launcher.returncode})")


if __name__ == "__main__":
    main()
