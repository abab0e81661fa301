"""Open ComfyUI workflows: the API and UI JSON formats, and PNGs that carry them.

    graph, report = comfyui.load("workflow.json", models=folders)
    print(report.text())

The converter is data only (no torch, no Qt, no code from the file); its one mapping table
is `engine.comfyui.table.MAPPING`. It runs in stages, one module each: reading, flatten, fold,
build (see convert.py); opening a file of any format is `engine.formats.open_file`.
"""

from .convert import convert, load, open_workflow, read, runnable_targets
from .export import ExportError, to_api
from .nodes import PLACEHOLDER_PREFIX
from .reading import is_comfyui
from .report import Issue, Report
from .table import MAPPING

__all__ = ["MAPPING", "PLACEHOLDER_PREFIX", "ExportError", "Issue", "Report", "convert",
           "is_comfyui", "load", "open_workflow", "read", "runnable_targets", "to_api"]
