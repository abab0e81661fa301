"""Small pure-Python nodes for engine tests (registered on private registries)."""

from __future__ import annotations

import random
import time

from engine.registry import Registry
from engine.spec import Float, In, Int, Node, Output, String
from engine.types import T


class Num(Node):
    type = "num"
    category = "test"
    inputs = (Int("value", 0, min=-10**6, max=10**6),)
    outputs = (Output("value", T.int),)

    def run(self, ctx, value):
        return {"value": value}

    @classmethod
    def constant(cls, params):
        return {"value": params.get("value", 0)}


class Add(Node):
    type = "add"
    aliases = ("plus",)
    category = "test"
    inputs = (Int("a", 0), Int("b", 0), Int("bias", 0, min=-100, max=100))
    outputs = (Output("value", T.int),)

    def run(self, ctx, a, b, bias=0):
        return {"value": a + b + bias}


class Sink(Node):
    type = "sink"
    category = "test"
    output = True
    inputs = (Int("value", 0),)
    outputs = ()

    def run(self, ctx, value):
        return {"ui": {"value": value}}


class Fail(Node):
    type = "fail"
    category = "test"
    inputs = (Int("value", 0),)
    outputs = (Output("value", T.int),)

    def run(self, ctx, value):
        raise ValueError("this node always fails")


class Slow(Node):
    type = "slow"
    category = "test"
    inputs = (Int("value", 0), Int("steps", 50, min=1, max=10**6), Float("delay", 0.01))
    outputs = (Output("value", T.int),)

    def run(self, ctx, value, steps=50, delay=0.01):
        for i in range(steps):
            time.sleep(delay)
            ctx.progress(i + 1, steps)
        return {"value": value}


class Rand(Node):
    type = "rand"
    category = "test"
    cacheable = False
    inputs = ()
    outputs = (Output("value", T.int),)

    def run(self, ctx):
        return {"value": random.randint(0, 10**9)}


class Tensor(Node):
    type = "tensor"
    category = "test"
    inputs = (Float("fill", 1.0), Int("size", 4, min=1, max=4096))
    outputs = (Output("image", T.image),)

    def run(self, ctx, fill, size=4):
        import torch

        return {"image": torch.full((1, 3, size, size), fill)}


class Mutate(Node):
    type = "mutate"
    category = "test"
    inputs = (In("image", T.image),)
    outputs = (Output("image", T.image),)

    def run(self, ctx, image):
        image.mul_(2)  # forbidden: changes a cached upstream output
        return {"image": image}


class Text(Node):
    type = "text"
    category = "test"
    inputs = (String("path", "", file="any"),)
    outputs = (Output("text", T.string),)

    def run(self, ctx, path):
        return {"text": ctx.resolve_path(path).read_text()}


class TextSink(Node):
    type = "text_sink"
    category = "test"
    output = True
    inputs = (String("text", ""),)
    outputs = ()

    def run(self, ctx, text):
        return {"ui": {"text": text}}


ALL = (Num, Add, Sink, Fail, Slow, Rand, Tensor, Mutate, Text, TextSink)


def registry() -> Registry:
    reg = Registry()
    reg.register_all(ALL)
    return reg
