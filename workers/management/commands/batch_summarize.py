"""Summarize a local file of documents with the batch engine and write the results file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from generation.specs import SummaryLength, Task
from webapp.accounts.models import Role, User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model
from webapp.inference.refusals import ModelUnavailable, Refused
from webapp.jobs import engine, inputs, results, services
from webapp.jobs.models import Job, JobStatus
from workers import scheduler as scheduling
from workers.heartbeat import Heartbeat

WAIT_SECONDS = 0.5  # between looks at the job when workers run it


class Command(BaseCommand):
    help = (
        "Summarize every document of a CSV, JSONL, .txt/.md or .zip file through a batch job "
        "(the same engine as the web page: background priority, at most "
        "ATELIER_JOB_MAX_IN_FLIGHT generations in flight) and write the results, in input "
        "order with each input's id, to --out (.jsonl or .csv). By default this command "
        "runs the generations itself, in this process, as a worker of the model's queue "
        "(it may also run other requests waiting on that queue, interactive ones first); "
        "it needs no worker running. With --use-workers it only creates the job and waits "
        "for the running workers to do it. The job also appears on the owner's Batch jobs "
        "page. Ctrl-C pauses the job (resume it there)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file", type=Path, help="the documents: .csv, .jsonl, .txt, .md or .zip"
        )
        parser.add_argument("--out", type=Path, required=True, help="results file (.jsonl or .csv)")
        parser.add_argument(
            "--field", default="", help="JSONL field holding the text (default: text)"
        )
        parser.add_argument("--column", default="", help="CSV column holding the text")
        parser.add_argument(
            "--id-field",
            "--id-column",
            dest="id_field",
            default="",
            help="JSONL field or CSV column holding each document's id",
        )
        parser.add_argument(
            "--whole",
            action="store_true",
            help="a .txt/.md file is one document (default: one per line)",
        )
        parser.add_argument(
            "--length", choices=list(SummaryLength), default="short", help="summary length preset"
        )
        parser.add_argument(
            "--model",
            default="",
            help="name of a summarize model in the catalog (default: the default one)",
        )
        parser.add_argument("--user", default="", help="the job's owner (default: the first admin)")
        parser.add_argument(
            "--use-workers", action="store_true", help="let running workers do the generations"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path = options["file"]
        out: Path = options["out"]
        kind = out.suffix.lower().lstrip(".")
        if kind not in results.KINDS:
            raise CommandError(f"--out must end in .jsonl or .csv, not {out.name!r}")
        if options["field"] and options["column"]:
            raise CommandError("give --field (JSONL) or --column (CSV), not both")
        if not source.is_file():
            raise CommandError(f"{source} is not a file")
        user = self._owner(options["user"])
        model = self._model(user, options["model"])
        try:
            parsed = inputs.parse(
                source.name,
                source.read_bytes()[: services.limits().max_upload_bytes + 1],
                column=options["field"] or options["column"],
                id_column=options["id_field"],
                text_mode=inputs.TextMode.WHOLE if options["whole"] else inputs.TextMode.LINES,
                limits=services.limits(),
            )
        except inputs.InputError as exc:
            raise CommandError(str(exc)) from None
        note = f", {parsed.skipped_empty} empty skipped" if parsed.skipped_empty else ""
        note += f", {parsed.invalid} unreadable" if parsed.invalid else ""
        self.stdout.write(f"{len(parsed.documents)} documents{note}; model {model.name}")
        try:
            job = services.create_job(
                user=user,
                model=model,
                task=Task.SUMMARIZE,
                options=services.options_for(Task.SUMMARIZE, length=options["length"]),
                source_name=source.name,
                parsed=parsed,
            )
        except Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"job #{job.pk}")
        try:
            self._run(job, use_workers=options["use_workers"])
        except KeyboardInterrupt:
            engine.pause(job)
            raise CommandError(
                f"interrupted: job #{job.pk} is paused; resume it on its page"
            ) from None
        job.refresh_from_db()
        with open(out, "w", encoding="utf-8", newline="") as file:
            for chunk in results.chunks(job, kind):
                file.write(chunk)
        self.stdout.write(
            f"job #{job.pk} {job.status}: {job.done_count} done, {job.failed_count} failed "
            f"of {job.total}; results in {out}"
        )

    def _owner(self, username: str) -> User:
        if username:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user {username!r}")
            return user
        admin = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk").first()
        if admin is None:
            raise CommandError("no admin account: name the job's owner with --user")
        return admin

    def _model(self, user: User, name: str) -> ModelEntry:
        model_id = None
        if name:
            entry = ModelEntry.objects.filter(name=name).first()
            if entry is None:
                raise CommandError(f"no model named {name!r} in the catalog")
            model_id = entry.pk
        try:
            return usable_model(user, Task.SUMMARIZE, model_id)
        except ModelUnavailable as exc:
            raise CommandError(str(exc)) from None

    def _run(self, job: Job, *, use_workers: bool) -> None:
        heartbeat = None
        if not use_workers:
            assert job.model is not None
            queue = job.model.queue
            heartbeat = Heartbeat([queue])
            heartbeat.start()  # so that live workers do not take our runs for orphans
            # This process runs the items as a worker does: batched, in fair order.
            scheduling.start([queue]).wake()
        bar = tqdm(total=job.total, unit="doc", disable=None, file=self.stderr)
        try:
            while True:
                job.refresh_from_db()
                bar.n = job.finished_items
                bar.set_postfix(done=job.done_count, failed=job.failed_count, refresh=False)
                bar.refresh()
                running = job.items.filter(status="running").exists()
                if job.status in (JobStatus.DONE, JobStatus.CANCELLED) and not running:
                    return
                if job.status == JobStatus.PAUSED and not running:
                    raise CommandError(f"job #{job.pk} was paused")
                time.sleep(WAIT_SECONDS)
                engine.reconcile(job.pk)
        finally:
            bar.close()
            if heartbeat is not None:
                scheduling.stop()  # what still runs (Ctrl-C) is requeued
                heartbeat.stop()
