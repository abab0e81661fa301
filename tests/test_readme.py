"""The README's Python example runs as written."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    code = blocks[0].replace('output_dir="output"', f'output_dir=r"{tmp_path}"')
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "ok [" in out and "run_finished" in out
    files = sorted(os.listdir(tmp_path))
    assert files == ["example_00001.png", "thumb_00001.png"]


def test_readme_node_example_defines_a_working_node():
    import torch

    from engine import Executor, Graph
    from engine.registry import Registry

    text = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[1]
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    reg = Registry()
    reg.register(ns["Brighten"])
    assert reg.get("mypack.brighten").title == "Brighten"
    node = ns["Brighten"]()
    out = node.run(None, torch.zeros(1, 3, 2, 2), 0.25)["image"]
    assert torch.allclose(out, torch.full((1, 3, 2, 2), 0.25))
    assert Graph(reg) is not None and Executor() is not None
