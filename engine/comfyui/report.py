"""What an import carried over and what it could not: the last stage's output, filled by
every stage before it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .table import KNOWN_MISSING

# the header of `Report.text` per format read
FORMAT_NAMES = {"api": "ComfyUI API format", "ui": "ComfyUI UI format",
                "a1111": "A1111/Forge generation parameters"}


@dataclass
class Issue:
    node: str
    input: str
    value: Any
    why: str

    def __str__(self) -> str:
        where = f"{self.node}.{self.input}" if self.input else self.node
        value = "" if self.value is None else f" = {short(self.value)}"
        return f"{where}{value}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "input": self.input, "value": jsonable(self.value),
                "why": self.why}


@dataclass
class Report:
    """What the import carried over and what it could not."""

    file: str = ""
    format: str = ""  # "api", "ui" or "a1111" (see FORMAT_NAMES)
    nodes: int = 0  # ComfyUI nodes read (after flattening subgraphs)
    mapped: Counter[str] = field(default_factory=Counter)  # ComfyUI class type -> count
    structural: Counter[str] = field(default_factory=Counter)  # Reroute / PrimitiveNode folded
    placeholders: dict[str, list[str]] = field(default_factory=dict)  # type -> node ids
    values: list[Issue] = field(default_factory=list)  # values not carried, or changed
    links: list[Issue] = field(default_factory=list)  # links not carried
    models: list[Issue] = field(default_factory=list)  # model files not found
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The program the file came from, for messages."""
        return "A1111" if self.format == "a1111" else "ComfyUI"

    @property
    def mapped_count(self) -> int:
        return sum(self.mapped.values())

    @property
    def placeholder_count(self) -> int:
        return sum(len(v) for v in self.placeholders.values())

    def share_mapped(self) -> float:
        n = self.mapped_count + self.placeholder_count
        return self.mapped_count / n if n else 1.0

    def problems(self) -> list[tuple[str, str, str]]:
        """(node id, input, message) for the editor's problems panel."""
        out = []
        for t, ids in self.placeholders.items():
            why = KNOWN_MISSING.get(t, "not a node Loom knows (a custom node?)")
            out += [(i, "", f"ComfyUI {t}: kept as a placeholder; {why}") for i in ids]
        out += [(m.node, m.input, f"model not found: {m.value} ({m.why})") for m in self.models]
        out += [(v.node, v.input, f"{short(v.value)}: {v.why}") for v in self.values]
        out += [(v.node, v.input, v.why) for v in self.links]
        return out

    def text(self) -> str:
        name = FORMAT_NAMES.get(self.format, self.format)
        lines = [f"{self.file}: {name}, {self.nodes} node(s)",
                 f"mapped: {self.mapped_count} node(s)"
                 + (f" ({', '.join(f'{k} x{v}' for k, v in sorted(self.mapped.items()))})"
                    if self.mapped else "")]
        if self.structural:
            lines.append("folded: " + ", ".join(f"{k} x{v}" for k, v in
                                                sorted(self.structural.items())))
        if self.placeholders:
            lines.append(f"kept as placeholders: {self.placeholder_count} node(s)")
            for t, ids in sorted(self.placeholders.items()):
                why = KNOWN_MISSING.get(t, "unknown to Loom (a custom node?)")
                lines.append(f"  {t} x{len(ids)} ({', '.join(ids)}): {why}")
        else:
            lines.append("kept as placeholders: none")
        if self.models:
            lines.append("models not found:")
            lines += [f"  {m.node}.{m.input} = {m.value}: {m.why}" for m in self.models]
        if self.values:
            lines.append("values not carried as they were:")
            lines += [f"  {v}" for v in self.values]
        if self.links:
            lines.append("links not carried:")
            lines += [f"  {v}" for v in self.links]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "nodes": self.nodes,
                "mapped": dict(self.mapped), "structural": dict(self.structural),
                "placeholders": self.placeholders,
                "values": [v.to_dict() for v in self.values],
                "links": [v.to_dict() for v in self.links],
                "models": [v.to_dict() for v in self.models], "notes": self.notes}


def jsonable(v: Any) -> Any:
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return repr(v)


def short(v: Any) -> str:
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
