"""What `loom run` prints while a graph runs: JSON lines, or progress on the terminal."""

from __future__ import annotations

import json
import sys

from engine.events import Event, NodeFinished, NodeStarted, Progress, RunStarted
from engine.text import printable


class JsonEvents:
    def __call__(self, ev: Event) -> None:
        print(json.dumps(ev.to_json(), default=str), flush=True)

    def close(self) -> None:
        pass


class TerminalProgress:
    """A progress bar on a terminal; one line per node otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.types: dict[str, str] = {}
        self._handlers = {RunStarted: self._run_started, NodeStarted: self._node_started,
                          Progress: self._progress, NodeFinished: self._node_finished}

    def __call__(self, ev: Event) -> None:
        handler = self._handlers.get(type(ev))
        if handler is not None:
            handler(ev)

    def _run_started(self, ev: RunStarted) -> None:
        warning = ev.memory.get("warning")
        if warning:
            print(printable(f"warning: {warning}"), file=sys.stderr)
        total = len(ev.plan["run"])
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="node", file=sys.stderr, leave=False)

    def _node_started(self, ev: NodeStarted) -> None:
        self.types[ev.node] = ev.type
        if self.bar is not None:
            self.bar.set_description(printable(f"{ev.node} {ev.type}"))

    def _progress(self, ev: Progress) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {ev.step}/{ev.total}")

    def _node_finished(self, ev: NodeFinished) -> None:
        if ev.cached:
            return
        if self.bar is not None:
            self.bar.update(1)
        else:
            print(printable(f"{ev.node} {ev.type}: {ev.seconds:.2f} s"), file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
