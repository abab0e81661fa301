"""Loom's engine: graph model, node specs and registry, workflow files, cache, executor,
events. Qt-free, and torch-free at import."""

from .cache import Cache, DiskCache, MemoryCache
from .context import CancelToken, NodeContext
from .errors import Cancelled, GraphError, InputError, LoomError, NodeFailure, WorkflowError
from .events import EventBus
from .executor import Executor, Plan, RunResult
from .graph import Graph, GraphNode, Link, NodeRef, OutRef
from .registry import Registry, default_registry
from .types import T, can_connect
from .validate import InvalidGraph, Problem, validate
from .workflow import dumps, load, loads, save

__version__ = "0.1.0"

__all__ = [
    "Cache", "CancelToken", "Cancelled", "DiskCache", "EventBus", "Executor", "Graph",
    "GraphError", "GraphNode", "InputError", "InvalidGraph", "Link", "LoomError",
    "MemoryCache", "NodeContext", "NodeFailure", "NodeRef", "OutRef", "Plan", "Problem",
    "Registry", "RunResult", "T", "WorkflowError", "can_connect", "default_registry", "dumps",
    "load", "loads", "save", "validate",
]
