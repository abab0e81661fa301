"""The `loom` command line: run, validate, nodes, extract, cache."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        return cmd_edit(argparse.Namespace(workflow=None))
    try:
        return args.func(args)
    except BrokenPipeError:
        return EXIT_OK


def cmd_edit(args) -> int:
    from app.editor import main as editor

    return editor(args.workflow)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loom", description="Loom: node graphs for diffusion "
                                "image work. With no command, opens the editor; `loom run` runs a "
                                "workflow headless.")
    sub = p.add_subparsers(metavar="COMMAND")

    r = sub.add_parser("run", help="run a workflow headless")
    r.add_argument("workflow", help="a workflow .json, or a PNG that Loom saved")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change an input first; NODE is a node id or title (repeatable)")
    r.add_argument("--out", default="output", help="output folder (default: ./output)")
    r.add_argument("--target", dest="targets", action="append", metavar="NODE",
                   help="run only what this node needs (default: every output node)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--cache-dir", type=_cache_folder,
                   help="on-disk output cache folder (default: the user cache)")
    g.add_argument("--no-disk-cache", action="store_true", help="keep outputs in memory only")
    r.add_argument("--disk-cache-gb", type=_cache_gib, default=4.0,
                   help=f"disk cache size (GiB, 0 to {MAX_CACHE_GIB})")
    r.add_argument("--events", choices=["json"], help="print one JSON object per event")
    r.add_argument("--models", action="append", metavar="DIR",
                   help="a model folder (checkpoints/, loras/, ... inside); repeatable")
    r.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the best there is)")
    r.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="compute precision")
    r.add_argument("--channels-last", action="store_true", help="UNet in channels-last format")
    r.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    r.add_argument("--model-budget-gb", type=_budget_gib, metavar="GIB",
                   help="keep at most this much model weights on the device (the one "
                   "needed furthest ahead goes first)")
    r.set_defaults(func=cmd_run)

    ed = sub.add_parser("edit", help="open a workflow in the editor (the default command)")
    ed.add_argument("workflow", nargs="?", help="a workflow .json, or a PNG that Loom saved")
    ed.set_defaults(func=cmd_edit)

    v = sub.add_parser("validate", help="list every problem of a workflow")
    v.add_argument("workflow")
    v.add_argument("--json", action="store_true")
    v.add_argument("--models", action="append", metavar="DIR")
    v.add_argument("--device", help="the device to estimate memory for (default: the best)")
    v.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="compute precision")
    v.add_argument("--model-budget-gb", type=_budget_gib, metavar="GIB",
                   help="the model budget a run would have")
    v.set_defaults(func=cmd_validate)

    im = sub.add_parser("import", help="convert a ComfyUI workflow (API or UI JSON, or a "
                        "ComfyUI PNG) or an A1111/Forge PNG's generation parameters, and "
                        "report what could not be carried over")
    im.add_argument("workflow")
    im.add_argument("-o", "--output", metavar="OUT.json", help="write the Loom workflow here")
    im.add_argument("--models", action="append", metavar="DIR",
                    help="a model folder to look the workflow's models up in; repeatable")
    im.add_argument("--json", action="store_true", help="print the report as JSON")
    im.set_defaults(func=cmd_import)

    ex = sub.add_parser("export", help="write a workflow in ComfyUI's API format (to queue it "
                        "on a ComfyUI server); only nodes ComfyUI has can be exported")
    ex.add_argument("workflow")
    ex.add_argument("-o", "--output", metavar="OUT.json", help="write here (default: stdout)")
    ex.set_defaults(func=cmd_export)

    n = sub.add_parser("nodes", help="list every node type")
    n.add_argument("--json", action="store_true")
    n.set_defaults(func=cmd_nodes)

    e = sub.add_parser("extract", help="print the workflow embedded in a PNG")
    e.add_argument("image")
    e.set_defaults(func=cmd_extract)

    m = sub.add_parser("models", help="list the models Loom finds, with their family")
    m.add_argument("--models", action="append", metavar="DIR")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("cache", help="show or clear the on-disk output cache")
    c.add_argument("--cache-dir", type=_cache_folder)
    c.add_argument("--clear", action="store_true")
    c.set_defaults(func=cmd_cache)
    return p


# ---- helpers -------------------------------------------------------------------------------

MAX_CACHE_GIB = 1 << 20  # a pebibyte: far beyond any disk, far below float overflow


def _gib(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a size in GiB from {low:g} to {high:g}, "
                                         f"got {text!r}")
    return value


def _cache_gib(text: str) -> float:
    return _gib(text, 0, MAX_CACHE_GIB)


def _budget_gib(text: str) -> float:
    return _gib(text, 0.01, 1 << 20)


def _cache_folder(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


def _err(msg: str) -> None:
    _say(f"loom: {msg}", file=sys.stderr)


def _say(text: Any, file: Any = None) -> None:
    """Print text for a person; what came from a file may hold terminal control sequences."""
    from engine.text import printable

    print(printable(text), file=file or sys.stdout)


def _load(path: str, args=None, quiet: bool = False):
    """A workflow from any file `engine.formats` opens (Loom's JSON or PNG, ComfyUI's API or
    UI JSON or PNG, an A1111 PNG), a converted one with its report on stderr. Exits 2 with a
    clear message when the file is none of these."""
    from engine import WorkflowError
    from engine.formats import open_file

    try:
        opened = open_file(path, models=_folders(args) if args else None)
    except WorkflowError as exc:
        _err(str(exc))
        raise SystemExit(EXIT_INVALID) from None
    graph, report = opened.graph, opened.report
    graph.comfyui_report = report
    if report is not None and not quiet:
        _say(report.text(), file=sys.stderr)
    return graph


def _same_file(a: str, b: str) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_input_as_output(args) -> bool:
    """True (after saying so) when -o names the input file, which writing would replace."""
    if args.output and _same_file(args.workflow, args.output):
        _err(f"{args.output}: this is the input file; write the output to another file")
        return True
    return False


def _write_output(target: str, data: bytes) -> bool:
    """Write an -o file atomically; False (after a clear message) when it cannot be."""
    from engine.fsutil import atomic_write, remove_stale_temps

    remove_stale_temps(Path(target).resolve().parent)
    try:
        atomic_write(target, data)
    except OSError as exc:
        _err(f"cannot write {target}: {exc.strerror or exc}")
        return False
    return True


def apply_sets(graph, sets: list[str]) -> None:
    """Apply `NODE.INPUT=VALUE` edits; values are JSON where they parse, else text."""
    from engine import GraphError
    from engine.text import lone_surrogate
    from engine.types import T

    for item in sets:
        if lone_surrogate(item) is not None:  # bytes that are not UTF-8, from argv
            raise GraphError(f"--set {item!r}: not valid UTF-8 text")
        key, eq, raw = item.partition("=")
        node_key, dot, input_name = key.rpartition(".")
        if not eq or not dot or not node_key or not input_name:
            raise GraphError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        node = graph.find(node_key)
        cls = graph.registry.get(node.type)
        spec = cls.input_map.get(input_name) if cls else None
        if spec is not None and spec.type in (T.string, T.choice):
            value: Any = raw
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            if lone_surrogate(value) is not None:
                raise GraphError(f"--set {item!r}: the value holds a lone surrogate, which is "
                                 "not valid Unicode")
        graph.set_param(node.id, input_name, value)


def _make_cache(args):
    from engine import Cache, DiskCache

    disk = None
    if not getattr(args, "no_disk_cache", False):
        from app.paths import cache_dir

        root = Path(args.cache_dir) if args.cache_dir else cache_dir() / "outputs"
        disk = DiskCache(root, int(args.disk_cache_gb * (1 << 30)))
    return Cache(disk=disk)


def _folders(args):
    from app.paths import RESOURCES
    from engine.modelpaths import ModelFolders

    bundled = RESOURCES / "models"
    return ModelFolders(getattr(args, "models", None) or [],
                        bundled=bundled if bundled.is_dir() else None)


def _make_models(args):
    from engine.runtime.device import DeviceChoice, choose
    from engine.runtime.models import ModelManager

    device: DeviceChoice | None = None
    channels_last, compile = getattr(args, "channels_last", False), getattr(args, "compile", False)
    if args.device or args.dtype or channels_last or compile:
        device = choose(args.device, args.dtype, channels_last=channels_last or None,
                        compile=compile or None)
    gib = getattr(args, "model_budget_gb", None)
    return ModelManager(device=device, paths=_folders(args),
                        budget_bytes=None if gib is None else int(gib * (1 << 30)))


# ---- commands ------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from engine import CancelToken, Executor, GraphError, InvalidGraph
    from engine.comfyui import runnable_targets

    graph = _load(args.workflow, args)
    if graph.comfyui_report is not None and not args.targets:
        args.targets, left_out = runnable_targets(graph)
        for nid, why in left_out.items():
            _err(f"{nid}: not run: {why}")
        if not args.targets:
            _err("nothing to run: every output node depends on a placeholder")
            return EXIT_INVALID
    try:
        apply_sets(graph, args.sets)
    except GraphError as exc:
        _err(str(exc))
        return EXIT_INVALID
    if graph.read_only and graph.revision:
        _err(f"warning: this workflow was {graph.read_only}; the images embed it as changed "
             "here, with a note saying so")
    executor = Executor(cache=_make_cache(args), output_dir=args.out,
                        models=_make_models(args))
    from app.progress import JsonEvents, TerminalProgress

    reporter = JsonEvents() if args.events == "json" else TerminalProgress()
    executor.events.subscribe(reporter)
    token = CancelToken()

    def on_sigint(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()
        if args.events != "json":
            print("\ncancelling (Ctrl-C again to abort at once)...", file=sys.stderr)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = executor.run(graph, args.targets, cancel=token)
    except InvalidGraph as exc:
        if args.events == "json":
            for p in exc.problems:
                print(json.dumps({"event": "invalid", **p.to_dict()}), flush=True)
        _err(str(exc))
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, old)
        reporter.close()
    if result.status == "cancelled":
        if args.events != "json":
            _err("cancelled; the cache is intact")
        return EXIT_CANCELLED
    if args.events != "json":
        for f in result.failures.values():
            _err(_failure_text(graph, f))
        for nid, why in result.skipped.items():
            _err(f"{nid}: not run: {why}")
        for f in result.files:
            _say(f)
        done = len(result.computed)
        print(f"{done} node(s) computed, {len(result.plan.cached)} from cache, "
              f"{result.seconds:.2f} s", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def _failure_text(graph, f) -> str:
    node = graph.nodes.get(f.node)
    label = f"{node.title or node.type} ({f.node})" if node else f.node
    text = f"{label} failed: {f.message}"
    if f.hint and f.hint not in text:
        text += f"\n  hint: {f.hint}"
    return text


def _memory(graph, args):
    """The graph's memory estimate, when a node in it has an estimator; None otherwise
    (no device is chosen, so no torch import, for graphs without models)."""
    from engine import Executor

    if not any(graph.registry.estimator(n.type) for n in graph.nodes.values()):
        return None
    try:
        return Executor(models=_make_models(args)).memory(graph)
    except ValueError as exc:  # a bad --device / --dtype
        _err(str(exc))
        return None


def _say_memory(graph, memory) -> None:
    from engine.estimates import gib

    for nid, m in memory.nodes.items():
        if m.peak:
            _say(f"memory: {nid} ({graph.nodes[nid].type}): about {gib(m.peak)} "
                 f"({gib(m.weights)} weights + {gib(m.activations)} working)")
    if memory.peak_node is not None:
        limit = f" of {gib(memory.limit)} {memory.limit_name}" if memory.limit else ""
        _say(f"memory: peak about {gib(memory.peak)} at {memory.peak_node}{limit}")


def cmd_validate(args) -> int:
    from engine import validate
    from engine.validate import Problem

    graph = _load(args.workflow, args, quiet=args.json)
    problems = validate(graph)
    memory = None
    if not any(p.severity == "error" for p in problems):
        memory = _memory(graph, args)
        if memory is not None and memory.warning():
            problems.append(Problem(memory.warning() or "", severity="warning",
                                    code="memory"))
    if args.json:
        print(json.dumps([p.to_dict() for p in problems], indent=2))
    else:
        for p in problems:
            _say(p)
        if memory is not None:
            _say_memory(graph, memory)
        n_err = sum(p.severity == "error" for p in problems)
        _say(f"{args.workflow}: {n_err} error(s), {len(problems) - n_err} warning(s)",
             file=sys.stderr)
    return EXIT_INVALID if any(p.severity == "error" for p in problems) else EXIT_OK


def cmd_import(args) -> int:
    from engine import WorkflowError
    from engine import workflow as wf
    from engine.formats import open_file

    if _refuse_input_as_output(args):
        return EXIT_INVALID
    try:
        opened = open_file(args.workflow, models=_folders(args))
    except WorkflowError as exc:
        _err(str(exc))
        return EXIT_INVALID
    graph, report = opened.graph, opened.report
    if report is None:
        _err(f"{args.workflow}: already a Loom workflow ({opened.format}); nothing to convert")
        return EXIT_INVALID
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _say(report.text())
    if args.output:
        if not _write_output(args.output, wf.dumps(graph).encode("utf-8")):
            return EXIT_FAILED
        _say(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_export(args) -> int:
    from engine.comfyui import ExportError, to_api
    from engine.text import json_printable

    if _refuse_input_as_output(args):
        return EXIT_INVALID
    graph = _load(args.workflow, quiet=True)
    try:
        prompt = to_api(graph)
    except ExportError as exc:
        _err(str(exc))
        return EXIT_INVALID
    text = json.dumps(prompt, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        if not _write_output(args.output, text.encode("utf-8")):
            return EXIT_FAILED
    else:
        print(json_printable(text), end="")
    return EXIT_OK


def cmd_nodes(args) -> int:
    from engine import default_registry

    reg = default_registry()
    if args.json:
        print(json.dumps([cls.describe() for cls in reg], indent=2))
        return EXIT_OK
    category = None
    for cls in reg:
        if cls.category != category:
            category = cls.category
            print(f"\n{category}")
        ins = ", ".join(f"{i.name}: {i.type.value}" for i in cls.inputs)
        outs = ", ".join(f"{o.name}: {o.type.value}" for o in cls.outputs) or "-"
        print(f"  {cls.type:<20} {cls.title}  ({ins}) -> {outs}")
    for name, error in reg.plugin_errors.items():
        _err(f"node package {name} failed to load: {error}")
    return EXIT_OK


def cmd_extract(args) -> int:
    from engine import WorkflowError
    from engine.formats import embedded_workflow
    from engine.text import json_printable

    try:
        text = embedded_workflow(args.image)
    except WorkflowError as exc:
        _err(str(exc))
        return EXIT_INVALID
    try:
        print(json_printable(json.dumps(json.loads(text), indent=2, ensure_ascii=False)))
    except ValueError:
        _err(f"{args.image}: the embedded workflow is not valid JSON")
        return EXIT_INVALID
    return EXIT_OK


def cmd_models(args) -> int:
    folders = _folders(args)
    rows = []
    for kind in folders.kinds:
        for entry in folders.list(kind):
            rows.append({"kind": kind, "name": entry.name, "path": str(entry.path),
                         "family": _family(kind, entry.path),
                         "bundled": folders.is_bundled(entry)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        looked = ", ".join(str(r) for r in folders.roots) or "(none)"
        _say(f"no models found; model folders: {looked}. Add one with --models DIR, the "
             "LOOM_MODELS variable or the config file", file=sys.stderr)
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            print(f"{kind}/")
        tag = " (bundled)" if r["bundled"] else ""
        _say(f"  {r['name']:<40} {r['family'] or '?'}{tag}")
    return EXIT_OK


def _family(kind: str, path: Path) -> str | None:
    """The model family from the file's tensor names and shapes (headers only)."""
    try:
        if kind in ("checkpoints", "diffusers", "diffusion_models"):
            from nodes.diffusion.flux import detect

            found = detect(path)
            if found is not None:
                return found.value
        if kind in ("checkpoints", "diffusers"):
            from nodes.diffusion.loading import detect_family, family_of_folder, header_shapes

            if path.is_dir():
                return family_of_folder(path)
            return detect_family(header_shapes(path)) if path.suffix == ".safetensors" else None
        if kind in ("text_encoders", "clip"):
            from nodes.diffusion.text_encoders import describe

            return describe(path)
    except Exception:
        return None
    return None


def cmd_cache(args) -> int:
    from app.paths import cache_dir
    from engine import DiskCache

    disk = DiskCache(Path(args.cache_dir) if args.cache_dir else cache_dir() / "outputs")
    cleared = disk.clear() if args.clear else True
    s = disk.summary()
    print(f"{s['root']}: {s['entries']} entries, {s['bytes'] / (1 << 20):.1f} MiB")
    temps = s["temp_files"]
    if temps["removed"]:
        print(f"removed {temps['removed']} stale temp file(s) left by interrupted writes, "
              f"{temps['removed_bytes'] / (1 << 20):.1f} MiB")
    if temps["live"]:
        print(f"{temps['live']} temp file(s) being written now (left alone)")
    for problem in s["problems"]:
        _err(problem)
    if not cleared:
        _err(f"the cache was not cleared: {len(s['problems'])} item(s) could not be removed")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
