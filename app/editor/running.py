"""The main window's runs: validate and queue a run, seed controls after it, the run
panel's buttons, problems, and the markers of what the next run computes. Run state and
its display live in RunView (runview.py)."""

from __future__ import annotations

import random

from PySide6.QtCore import Qt

from engine.events import RunStatus


class RunActions:
    def _follow_runs(self) -> None:
        self.run_state.node_failed.connect(self._on_node_failed)
        self.run_state.preview.connect(self.viewer.set_preview)
        self.run_state.image_made.connect(self.gallery.add)
        self.scene.follow_run(self.run_state)
        self.run_panel.follow_run(self.run_state)
        self.runner.event.connect(self.run_state.on_event)
        self.runner.started.connect(self._on_run_started)
        self.runner.finished.connect(self._on_run_finished)
        self.runner.queue_changed.connect(self._on_queue)

    def run(self) -> None:
        from engine import validate
        from engine.validate import errors

        problems = validate(self.doc.graph)
        self.show_problems(problems)
        if errors(problems):
            self.docks["problems"].raise_()
            self.statusBar().showMessage("Not run: fix the problems listed first", 6000)
            return
        self.runner.submit(self.doc.graph, self.doc.path.name if self.doc.path else "Untitled")
        self.apply_seed_control()

    def apply_seed_control(self) -> None:
        """Seeds set to 'randomize' or 'increment' change after each run is queued."""
        from .document import SetParam

        for node in list(self.doc.graph):
            control = node.params.get("control_after_run")
            if control not in ("randomize", "increment"):
                continue
            cls = self.registry.get(node.type)
            seed_inputs = [i.name for i in cls.inputs if i.type.value == "SEED"] if cls else []
            for name in seed_inputs:
                if (node.id, name) in self.doc.graph.links:
                    continue
                old = int(node.params.get(name, cls.input_map[name].default))
                new = random.randint(0, 2**31 - 1) if control == "randomize" \
                    else (old + 1) % 2**63
                self.doc.push(SetParam(self.doc, node.id, name, new))

    def stop(self) -> None:
        self.runner.stop()

    def _on_queue(self, n: int) -> None:
        self.run_panel.queue.clear()
        for job in self.runner.queue:
            self.run_panel.queue.addItem(f"#{job.id} {job.label}")

    def _on_run_started(self, job_id: int, label: str) -> None:
        self.stop_action.setEnabled(True)
        self.run_panel.started(label, 1)

    def _on_node_failed(self, node_id: str, message: str) -> None:
        self.problems.addItem(f"⛔ {self.doc.title_of(node_id)}: {message}")
        last = self.problems.item(self.problems.count() - 1)
        last.setData(Qt.ItemDataRole.UserRole, node_id)
        self.docks["problems"].raise_()

    def _on_run_finished(self, job_id: int, status: str, seconds: float, problems) -> None:
        self.stop_action.setEnabled(self.runner.busy)
        self.run_panel.finished(status, seconds)
        self.run_state.finished()
        if status == RunStatus.INVALID and problems:
            self.show_problems(problems)
        elif status == RunStatus.FAILED and problems:
            self.problems.addItem(f"⛔ {problems[0]}")
        self.statusBar().showMessage(f"Run {status} in {seconds:.2f} s", 6000)
        self.refresh_markers()

    def show_problems(self, problems) -> None:
        rows = []
        for pr in problems:
            title = self.doc.title_of(pr.node) if pr.node and pr.node in self.doc.graph else ""
            where = f"{title}" + (f" · {pr.input}" if pr.input else "")
            msg = pr.message
            if pr.expected:
                msg += f" (expected {pr.expected}" + (f", got {pr.got}" if pr.got else "") + ")"
            rows.append((pr.node, pr.severity, f"{where}: {msg}" if where else msg))
        report = self.import_report
        if report is not None:  # what the import could not carry, until a new file
            for node, inp, msg in report.problems():
                if node in self.doc.graph and "placeholder" in msg:
                    continue  # validation already lists each placeholder
                title = self.doc.title_of(node) if node in self.doc.graph else node
                rows.append((node if node in self.doc.graph else None, "warning",
                             f"{report.source} import · {title}" + (f" · {inp}" if inp else "")
                             + f": {msg}"))
        self.problems.show_problems(rows)

    def refresh_problems(self) -> None:
        from engine import validate

        self.show_problems(validate(self.doc.graph))

    # markers: which nodes the next run will compute
    def _schedule_plan(self) -> None:
        self._plan_timer.start()

    def refresh_markers(self) -> None:
        if self.runner.busy or self._executor is None:
            return  # nothing is cached before the first run; never plan during a run
        try:
            plan = self._executor.plan(self.doc.graph)
        except Exception:
            return
        try:
            memory = self._executor.memory(self.doc.graph, plan).to_dict()["nodes"]
        except Exception:  # an estimate is a hint: never in the way of the markers
            memory = {}
        self.run_state.mark_stale(set(plan.run), memory)
