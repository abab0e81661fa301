"""A third-party node package with its own link type and model kind, registered the way
the built-in families do it, without anything in engine/ knowing of it.

A STYLE is a named text style read from a `styles/` model folder (one `.style` file per
style, in sub-folders too); a STYLE may feed any STRING input (its text)."""

from engine.modelpaths import Layout, ModelKind
from engine.spec import In, Node, Output, String
from engine.types import LinkType, T

STYLE = LinkType("STYLE", colour="#12ab34", feeds=("STRING",),
                 description="a text style from the styles folder")
STYLES = ModelKind("styles", layout=Layout.tree, suffixes=(".style",), markers=(),
                   description="text styles, one .style file each")


class LoadStyle(Node):
    type = "styles.load"
    title = "Load Style"
    category = "styles"
    inputs = (String("style_name", "", file=STYLES),)
    outputs = (Output("style", STYLE),)

    def run(self, ctx, style_name):
        path = ctx.models.paths.find(STYLES, style_name)
        return {"style": path.read_text().strip()}


class StyledText(Node):
    type = "styles.apply"
    title = "Styled Text"
    category = "styles"
    inputs = (In("style", STYLE), String("text", ""))
    outputs = (Output("text", T.string),)

    def run(self, ctx, style, text=""):
        return {"text": f"{text}, {style}"}


NODES = (LoadStyle, StyledText)


def register(registry):
    registry.add_link_type(STYLE)
    registry.add_model_kind(STYLES)
    registry.register_all(NODES)
