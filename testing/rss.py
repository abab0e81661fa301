"""Peak memory of running a workflow, measured in this process: `python -m testing.rss
WORKFLOW --models DIR [--warmup WORKFLOW] [--target NODE]` prints JSON with the peak RSS
above the RSS before the run (sampled every 2 ms, and the kernel's high-water mark, reset
before the run), per node, and the executor's estimate. The warm-up run (then its models
unloaded) brings in the code every node imports, which is the interpreter's memory, not the
graph's."""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_high_water() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5), so the peak
    read after the run is the run's, not the warm-up's or the imports'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def high_water() -> int:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM:"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workflow")
    ap.add_argument("--models", action="append", default=[])
    ap.add_argument("--warmup")
    ap.add_argument("--target", action="append")
    args = ap.parse_args()

    from engine import Executor, workflow
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    manager = ModelManager(paths=ModelFolders(args.models, use_env=False, use_config=False))
    if args.warmup:
        Executor(models=manager).run(workflow.load(args.warmup))
        manager.unload()
    graph = workflow.load(args.workflow)
    executor = Executor(models=manager)
    plan = executor.plan(graph, args.target)
    estimate = executor.memory(graph, plan)
    gc.collect()
    reset = reset_high_water()
    base = rss()
    node: list[str] = [""]
    peaks: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            r = rss()
            peaks[node[0]] = max(peaks.get(node[0], 0), r - base)
            time.sleep(0.002)

    executor.events.subscribe(lambda e: node.__setitem__(0, e.node)
                              if e.event == "node_started" else None)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = executor.run(graph, args.target)
    done.set()
    sampler.join()
    # the kernel's mark catches a peak between two samples; without a reset it would hold
    # the process's whole life, so then only the samples count
    high = high_water() - base if reset else 0
    print(json.dumps({"ok": result.ok, "peak": max(high, max(peaks.values(), default=0)),
                      "nodes": {k: v for k, v in peaks.items() if k},
                      "estimate": estimate.to_dict()}))


if __name__ == "__main__":
    main()
