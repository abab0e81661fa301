"""Builders of tiny models in the released layouts, for tests, benchmarks and the demo
models' training. Not part of the installed packages; nothing under nodes/, engine/ or
app/ imports it (a test checks)."""
