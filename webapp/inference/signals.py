"""Signals other apps listen to, so that `inference` needs to know none of them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a Generation's outcome is recorded (done, stopped, failed or blocked), after the
# transaction commits, in whichever process recorded it (a worker, or the web process for a
# queued generation that was stopped). Arguments: generation_id, status, finish_reason.
generation_finished = Signal()

# Sent when the front door refuses a request (nothing queued), in the process that refused
# it. Arguments: task, code (the refusal's: e.g. input_blocked, rate_limit_exceeded).
request_refused = Signal()
