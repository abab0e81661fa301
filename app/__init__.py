"""Loom's faces: the `loom` command line and (later) the PySide6 editor."""
