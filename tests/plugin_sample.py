"""A third-party node package in its simplest form: a module with a NODES list."""

from engine.spec import Int, Node, Output
from engine.types import T


class Double(Node):
    type = "plugin.double"
    inputs = (Int("value", 1),)
    outputs = (Output("value", T.int),)

    def run(self, ctx, value):
        return {"value": 2 * value}


NODES = (Double,)
