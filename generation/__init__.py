"""Atelier's inference library: loading, quantizing, prompting and streaming models.

Nothing here imports Django or Celery, so it can be used, tested and benchmarked on its own.
"""
