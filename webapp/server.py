"""The web server: `python -m webapp.server [Daphne's options] webapp.asgi:application`.

Daphne, run as its own command line runs it, with its WebSocket transport limits taken from
ATELIER_MAX_FRAME_BYTES instead of Daphne's fixed 1 MiB, so that every oversized frame gets
an answer a client can act on:

- up to the limit: the frame is read and handled;
- over the limit, up to TRANSPORT_SLACK times it: the frame is read and the consumer
  answers the documented `frame_too_large` error; the connection stays open;
- larger still: the transport refuses it unread with a close frame, code 1009 ("message
  too big"). Daphne leaves autobahn's `failByDrop` on, which drops the TCP connection
  without a close frame (the client sees a reset); it is turned off here.

The run command (webapp/launcher.py), docker-compose.yml and the tests' web server
(tests/processes.py) all start the web process through this module.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

# How far past ATELIER_MAX_FRAME_BYTES the transport still reads a frame, so that a message
# a little too long (a pasted document) is answered in the protocol and the page stays
# connected; anything larger costs no more memory than this before it is refused.
TRANSPORT_SLACK = 4


def transport_limit(max_frame_bytes: int) -> int:
    """The largest WebSocket message (and frame) the transport reads, in bytes."""
    return TRANSPORT_SLACK * max_frame_bytes


def daphne_options(max_frame_bytes: int) -> list[str]:
    limit = str(transport_limit(max_frame_bytes))
    return ["--websocket-max-message-size", limit, "--websocket-max-frame-size", limit]


class AtelierServer(Server):
    ready_callable: Any  # daphne has no type hints

    def run(self) -> None:
        # Daphne builds its WebSocket factory inside run() and calls ready_callable just
        # before the reactor starts: the last moment an option can be set for every
        # connection.
        ready = self.ready_callable

        def close_instead_of_dropping() -> None:
            self.ws_factory.setProtocolOptions(failByDrop=False)
            if ready is not None:
                ready()

        self.ready_callable = close_instead_of_dropping
        super().run()


class AtelierCommandLine(CommandLineInterface):
    server_class = AtelierServer


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")  # as webapp.asgi does
    from django.conf import settings

    options = daphne_options(settings.ATELIER_MAX_FRAME_BYTES)
    args = sys.argv[1:] if argv is None else argv
    AtelierCommandLine().run([*options, *args])


if __name__ == "__main__":
    main()
