"""The package list pyproject.toml cannot say: the checkout's top-level resources/ folder
ships inside the wheel as the `loom_resources` package (found by engine/resources.py)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["app*", "engine*", "nodes*"]) + ["loom_resources"],
      package_dir={"loom_resources": "resources"})
