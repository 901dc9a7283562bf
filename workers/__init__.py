"""Celery workers: the thin bridge between Generation rows and the generation library."""
