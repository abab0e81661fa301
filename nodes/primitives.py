"""Primitive value nodes: one widget whose value feeds any number of inputs."""

from __future__ import annotations

from typing import Any

from engine.spec import Bool, Float, Int, Node, Output, Seed, SeedControl, String
from engine.types import T


class _Primitive(Node):
    category = "primitives"

    def run(self, ctx, value):
        return {"value": value}

    @classmethod
    def constant(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {"value": params.get("value", cls.input_map["value"].default)}


class IntValue(_Primitive):
    type = "int"
    title = "Int"
    description = "A whole number to wire into any INT, FLOAT or SEED input."
    inputs = (Int("value", 0),)
    outputs = (Output("value", T.int),)


class FloatValue(_Primitive):
    type = "float"
    title = "Float"
    description = "A number to wire into any FLOAT input."
    inputs = (Float("value", 0.0),)
    outputs = (Output("value", T.float),)


class StringValue(_Primitive):
    type = "string"
    title = "String"
    description = "Text (a prompt, a file name) to wire into any STRING input."
    inputs = (String("value", "", multiline=True),)
    outputs = (Output("value", T.string),)


class BoolValue(_Primitive):
    type = "bool"
    title = "Boolean"
    description = "A switch to wire into any BOOL input."
    inputs = (Bool("value", False),)
    outputs = (Output("value", T.bool),)


class SeedValue(_Primitive):
    type = "seed"
    title = "Seed"
    description = ("A random seed shared by several samplers. The editor can randomize, "
                   "increment or keep it after each run.")
    inputs = (Seed("value", 0), SeedControl())
    outputs = (Output("value", T.seed),)

    def run(self, ctx, value, control_after_run="fixed"):
        return {"value": value}


class Note(Node):
    type = "note"
    title = "Note"
    category = "utils"
    description = "Text on the canvas for whoever reads the workflow. It never runs."
    inputs = (String("text", "", multiline=True), Bool("markdown", False))
    outputs = ()

    def run(self, ctx, text="", markdown=False):
        return {}


NODES = (IntValue, FloatValue, StringValue, BoolValue, SeedValue, Note)
