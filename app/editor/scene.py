"""The canvas's items, drawn from node specs: nodes with typed ports and compact widget
values, wires, frames. Items mirror the document; they never edit the graph themselves.

Geometry is computed once per change and cached, so `boundingRect` and `paint` stay cheap;
zoomed out, nodes draw as plain title bars."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QStyleOptionGraphicsItem,
)

from engine import Link
from engine.spec import REQUIRED

from . import theme
from .document import Document


@dataclass(frozen=True)
class Port:
    node: str
    name: str
    type: str  # the type's name, e.g. "IMAGE"; "" for a placeholder's port
    output: bool
    widget: bool = False  # a value input (drawn with its value)


def ports_of(doc: Document, node_id: str) -> tuple[list[Port], list[Port]]:
    """(outputs, inputs) of a node; a placeholder's come from its links and params."""
    node = doc.graph.node(node_id)
    cls = doc.registry.get(node.type)
    if cls is not None:
        outs = [Port(node_id, o.name, o.type.value, True) for o in cls.outputs]
        ins = [Port(node_id, i.name, i.type.value, False, i.is_widget) for i in cls.inputs
               if not i.ui_only]
        return outs, ins
    out_names = sorted({l.src_output for l in doc.graph.links.values() if l.src == node_id})
    in_names = [l.dst_input for l in doc.graph.links.values() if l.dst == node_id]
    ins = [Port(node_id, n, "", False) for n in in_names]
    ins += [Port(node_id, n, "", False, True) for n in node.params if n not in in_names]
    return [Port(node_id, n, "", True) for n in out_names], ins


def short_value(v) -> str:
    if isinstance(v, float):
        text = f"{v:.3g}"
    elif isinstance(v, str):
        text = v.replace("\n", " ")
    else:
        text = str(v)
    return text if len(text) <= 22 else text[:21] + "…"


class NodeItem(QGraphicsItem):
    def __init__(self, doc: Document, node_id: str):
        super().__init__()
        self.doc, self.node_id = doc, node_id
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self.state = ""  # "", running, computed, cached, failed
        self.progress = 0.0
        self.stale = False  # will run on the next Run
        self.memory: dict | None = None  # the next run's estimate for it (bytes)
        self.message = ""
        self.thumbnail: QPixmap | None = None
        self.highlight: set[Port] = set()  # ports a dragged wire may connect to
        self.refresh()

    # ---- geometry (recomputed on change, read in paint) -----------------------------------
    def refresh(self) -> None:
        self.prepareGeometryChange()
        doc, node = self.doc, self.doc.graph.node(self.node_id)
        cls = doc.registry.get(node.type)
        self.placeholder = cls is None
        self.title = doc.title_of(self.node_id)
        self.category = cls.category if cls else ""
        self.outputs, self.inputs = ports_of(doc, self.node_id)
        self.values = {}
        for p in self.inputs:
            if p.widget:
                default = cls.input_map[p.name].default if cls else None
                v = node.params.get(p.name, default)
                self.values[p.name] = "" if v is None or v is REQUIRED else short_value(v)
        self.mode = node.mode
        self._far_colour = theme.PLACEHOLDER if self.placeholder else \
            theme.category_colour(self.category)
        rows = len(self.outputs) + len(self.inputs) + (1 if self.placeholder else 0)
        h = theme.TITLE_H + rows * theme.ROW_H + 6
        self.body_h = h
        if self.thumbnail is not None:
            h += self.thumbnail.height() + 8
        self.rect = QRectF(0, 0, theme.NODE_WIDTH, h)
        self.tooltip_text()
        self.update()

    def tooltip_text(self) -> None:
        tip = self.message if self.state == "failed" else ""
        if self.stale and self.memory and self.memory.get("peak"):
            from engine.estimates import gib

            m = self.memory
            tip = "\n".join(filter(None, (tip, (
                f"next run: about {gib(m['peak'])} of memory ({gib(m['weights'])} of model "
                f"weights + {gib(m['activations'])} working)"))))
        if self.placeholder:
            tip = (f"Unknown node type {self.doc.graph.node(self.node_id).type!r}: its data and "
                   "links are kept and saved back unchanged, but it cannot run.")
        self.setToolTip(tip)

    def port_pos(self, port: Port) -> QPointF:
        """A port's centre in item coordinates."""
        if port.output:
            i = self.outputs.index(port)
            return QPointF(theme.NODE_WIDTH, theme.TITLE_H + (i + 0.5) * theme.ROW_H)
        i = self.inputs.index(port)
        return QPointF(0, theme.TITLE_H + (len(self.outputs) + i + 0.5) * theme.ROW_H)

    def port_scene_pos(self, name: str, output: bool) -> QPointF:
        for p in (self.outputs if output else self.inputs):
            if p.name == name:
                return self.mapToScene(self.port_pos(p))
        return self.mapToScene(QPointF(theme.NODE_WIDTH if output else 0, theme.TITLE_H / 2))

    def port_at(self, scene_pos: QPointF, slack: float = 9.0) -> Port | None:
        local = self.mapFromScene(scene_pos)
        for p in self.outputs + self.inputs:
            c = self.port_pos(p)
            if abs(c.x() - local.x()) <= slack and abs(c.y() - local.y()) <= theme.ROW_H / 2:
                return p
        return None

    def set_thumbnail(self, pixmap: QPixmap | None) -> None:
        if pixmap is not None and not pixmap.isNull():
            pixmap = pixmap.scaled(int(theme.NODE_WIDTH - 16), theme.THUMB * 2,
                                   Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.thumbnail = pixmap
        self.refresh()

    def boundingRect(self) -> QRectF:
        return self.rect.adjusted(-theme.PORT_R - 2, -4, theme.PORT_R + 2, 4)

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and self.scene():
            self.scene().node_geometry_changed(self.node_id)
        return super().itemChange(change, value)

    # ---- drawing ---------------------------------------------------------------------------
    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        lod = option.levelOfDetailFromTransform(p.worldTransform())
        if lod < 0.18:  # far out: a coloured block per node, as little Python as possible
            p.fillRect(self.rect, self._far_colour)
            if self.isSelected() or self.state in ("running", "failed"):
                p.setPen(QPen(theme.SELECTED if self.isSelected() else
                              theme.RUNNING if self.state == "running" else theme.FAILED, 0))
                p.drawRect(self.rect)
            return
        r = self.rect
        p.setOpacity(0.45 if self.mode == "muted" else 1.0)
        body = theme.PLACEHOLDER if self.placeholder else theme.NODE_BODY
        if self.mode == "bypassed":
            body = QColor("#4a2f52")
        border = theme.SELECTED if self.isSelected() else \
            theme.FAILED if self.state == "failed" else \
            theme.RUNNING if self.state == "running" else theme.NODE_BORDER
        p.setPen(QPen(border, 2.5 if border != theme.NODE_BORDER else 1.0))
        p.setBrush(body)
        p.drawRoundedRect(r, 6, 6)
        title_rect = QRectF(0, 0, r.width(), theme.TITLE_H)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(theme.category_colour(self.category) if not self.placeholder
                   else theme.FAILED.darker(150))
        p.drawRoundedRect(title_rect.adjusted(1, 1, -1, 0), 5, 5)
        p.setPen(theme.TEXT)
        if lod < 0.3:  # zoomed out: a title bar is all one can read
            f = QFont(p.font())
            f.setPointSizeF(14)
            p.setFont(f)
            p.drawText(title_rect.adjusted(6, 0, -6, 0), Qt.AlignmentFlag.AlignVCenter, self.title)
            return
        f = QFont(p.font())
        f.setBold(True)
        f.setPointSizeF(9)
        p.setFont(f)
        label = self.title + ("  (muted)" if self.mode == "muted" else
                              "  (bypassed)" if self.mode == "bypassed" else "")
        room = 30 + (50 if self.stale and self.memory_label() else 0)  # status ring, estimate
        p.drawText(title_rect.adjusted(8, 0, -room, 0), Qt.AlignmentFlag.AlignVCenter, label)
        self._paint_status(p, title_rect)
        f.setBold(False)
        f.setPointSizeF(8)
        p.setFont(f)
        for port in self.outputs + self.inputs:
            self._paint_port(p, port, lod)
        if self.placeholder:
            y = theme.TITLE_H + (len(self.outputs) + len(self.inputs)) * theme.ROW_H
            p.setPen(theme.FAILED.lighter(130))
            p.drawText(QRectF(8, y, r.width() - 16, theme.ROW_H), Qt.AlignmentFlag.AlignVCenter,
                       f"missing node type: {self.doc.graph.node(self.node_id).type}")
        if self.thumbnail is not None:
            x = (r.width() - self.thumbnail.width()) / 2
            p.drawPixmap(QPointF(x, self.body_h + 2), self.thumbnail)
        if self.state == "running" and self.progress > 0:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(theme.RUNNING)
            p.drawRect(QRectF(2, theme.TITLE_H - 3, (r.width() - 4) * self.progress, 3))

    def _paint_status(self, p: QPainter, title_rect: QRectF) -> None:
        x = title_rect.right() - 14
        y = title_rect.center().y()
        if self.state in ("computed", "cached", "failed", "running"):
            colour = {"computed": theme.RUNNING.darker(120), "cached": theme.CACHED,
                      "failed": theme.FAILED, "running": theme.RUNNING}[self.state]
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(colour)
            p.drawEllipse(QPointF(x, y), 4.5, 4.5)
        if self.stale:  # will re-run: a small hollow ring
            p.setPen(QPen(theme.SELECTED, 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(QPointF(x - 13, y), 3.5, 3.5)
            label = self.memory_label()
            if label:  # its memory estimate, beside the ring
                f = p.font()
                f.setPointSizeF(7)
                p.setFont(f)
                p.setPen(theme.DIM_TEXT)
                p.drawText(QRectF(x - 70, y - 7, 50, 14),
                           Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, label)

    def memory_label(self) -> str:
        """The next run's peak for this node, short ("1.2G", "340M"); "" when unknown."""
        peak = (self.memory or {}).get("peak", 0)
        if not peak:
            return ""
        return f"{peak / (1 << 30):.1f}G" if peak >= 1 << 30 else f"{peak / (1 << 20):.0f}M"

    def _paint_port(self, p: QPainter, port: Port, lod: float) -> None:
        c = self.port_pos(port)
        colour = theme.type_colour(self.doc.registry, port.type) if port.type else QColor("#888")
        lit = port in self.highlight
        p.setPen(QPen(theme.SELECTED if lit else theme.NODE_BORDER, 2 if lit else 1))
        connected = self.scene() is not None and self.scene().is_connected(port)
        p.setBrush(colour if connected or port.output else colour.darker(170))
        p.drawEllipse(c, theme.PORT_R + (1.5 if lit else 0), theme.PORT_R + (1.5 if lit else 0))
        if lod < 0.45:
            return
        p.setPen(theme.TEXT if not port.widget else theme.DIM_TEXT)
        row = QRectF(12, c.y() - theme.ROW_H / 2, theme.NODE_WIDTH - 24, theme.ROW_H)
        if port.output:
            p.drawText(row, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       port.name)
            return
        p.drawText(row, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, port.name)
        if port.widget and port.name in self.values and not (
                self.scene() and self.scene().is_connected(port)):
            p.setPen(theme.TEXT)
            p.drawText(row, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       self.values[port.name])


class WireItem(QGraphicsPathItem):
    def __init__(self, link: Link, colour: QColor):
        super().__init__()
        self.link = link
        self.setZValue(-1)
        self.setPen(QPen(colour, 2.2))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)

    def set_ends(self, a: QPointF, b: QPointF) -> None:
        self.setPath(wire_path(a, b, self.points()))

    def points(self) -> list[QPointF]:
        return [QPointF(x, y) for x, y in self.link.extra.get("reroutes") or []]


def wire_path(a: QPointF, b: QPointF, via: list[QPointF] = ()) -> QPainterPath:
    """A smooth wire from an output to an input, through any reroute dots."""
    path = QPainterPath(a)
    stops = [a, *via, b]
    for p, q in zip(stops, stops[1:]):
        dx = max(abs(q.x() - p.x()) * 0.5, 40.0)
        path.cubicTo(QPointF(p.x() + dx, p.y()), QPointF(q.x() - dx, q.y()), q)
    return path


class RerouteDot(QGraphicsItem):
    """A draggable dot a wire passes through. Double-click removes it."""

    R = 6.0

    def __init__(self, key: tuple[str, str], index: int, pos: QPointF, colour: QColor):
        super().__init__()
        self.key, self.index, self.colour = key, index, colour
        self.setPos(pos)
        self.setZValue(1)
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)

    def boundingRect(self) -> QRectF:
        return QRectF(-self.R - 2, -self.R - 2, 2 * self.R + 4, 2 * self.R + 4)

    def paint(self, p: QPainter, option, widget=None) -> None:
        p.setPen(QPen(theme.SELECTED if self.isSelected() else theme.NODE_BORDER, 1.5))
        p.setBrush(self.colour)
        p.drawEllipse(QPointF(0, 0), self.R, self.R)

    def itemChange(self, change, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and self.scene():
            self.scene().reroute_moved(self)
        return super().itemChange(change, value)


class FrameItem(QGraphicsItem):
    """A frame (a `Group`): a named, coloured rectangle behind its nodes. Dragging its title
    moves them."""

    MARGIN = 18.0

    def __init__(self, index: int, title: str, colour: str | None):
        super().__init__()
        self.index, self.title = index, title
        self.colour = QColor(colour or "#4a5a6a")
        self.rect = QRectF()
        self.setZValue(-10)
        self.setAcceptHoverEvents(True)

    def fit(self, rects: list[QRectF]) -> None:
        self.prepareGeometryChange()
        if not rects:
            self.rect = QRectF()
            return
        r = rects[0]
        for other in rects[1:]:
            r = r.united(other)
        self.rect = r.adjusted(-self.MARGIN, -self.MARGIN - 24, self.MARGIN, self.MARGIN)
        self.update()

    def boundingRect(self) -> QRectF:
        return self.rect

    def paint(self, p: QPainter, option, widget=None) -> None:
        c = QColor(self.colour)
        c.setAlpha(60)
        p.setPen(QPen(self.colour, 1.5))
        p.setBrush(c)
        p.drawRoundedRect(self.rect, 8, 8)
        p.setPen(theme.TEXT)
        f = QFont(p.font())
        f.setBold(True)
        f.setPointSizeF(11)
        p.setFont(f)
        p.drawText(self.rect.adjusted(10, 4, -10, 0), Qt.AlignmentFlag.AlignTop, self.title)

    def title_rect(self) -> QRectF:
        return QRectF(self.rect.left(), self.rect.top(), self.rect.width(), 28)


class GraphScene(QGraphicsScene):
    """Mirrors a Document: one NodeItem per node, one WireItem per link, one FrameItem per
    group, kept in step through the document's signals."""

    def __init__(self, doc: Document):
        super().__init__()
        self.doc = doc
        self.nodes: dict[str, NodeItem] = {}
        self.wires: dict[tuple[str, str], WireItem] = {}
        self.frames: list[FrameItem] = []
        self._sources: set[tuple[str, str]] = set()  # (node, output) with a wire
        self.dots: dict[tuple[str, str], list[RerouteDot]] = {}
        self.setBackgroundBrush(QBrush(theme.BACKGROUND))
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        doc.node_added.connect(self._add_node)
        doc.node_removed.connect(self._remove_node)
        doc.node_changed.connect(self._node_changed)
        doc.node_moved.connect(self._node_moved)
        doc.link_added.connect(self._add_link)
        doc.link_removed.connect(self._remove_link)
        doc.groups_changed.connect(self._rebuild_frames)
        doc.reset.connect(self.rebuild)
        self.run = None
        self.rebuild()

    def follow_run(self, run) -> None:
        """Draw the run state a RunView holds (status dots, progress, thumbnails)."""
        self.run = run
        run.node_changed.connect(self._run_changed)
        run.thumbnail.connect(self._run_thumbnail)

    def _run_changed(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is None or self.run is None:
            return
        st = self.run.state(node_id)
        item.state, item.progress, item.message, item.stale, item.memory = \
            st.status, st.progress, st.message, st.stale, st.memory
        item.tooltip_text()
        item.update()

    def _run_thumbnail(self, node_id: str, image) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            item.set_thumbnail(QPixmap.fromImage(image))

    def rebuild(self) -> None:
        dots = [d for ds in self.dots.values() for d in ds]
        for item in list(self.nodes.values()) + list(self.wires.values()) + self.frames + dots:
            self.removeItem(item)
        self.nodes, self.wires, self.frames, self.dots = {}, {}, [], {}
        self._sources = set()
        for node in self.doc.graph:
            self._add_node(node.id)
        for link in self.doc.graph.links.values():
            self._add_link(link)
        self._rebuild_frames()

    def is_connected(self, port: Port) -> bool:
        if port.output:
            return (port.node, port.name) in self._sources
        return (port.node, port.name) in self.wires

    def _add_node(self, node_id: str) -> None:
        item = NodeItem(self.doc, node_id)
        item.setPos(*self.doc.graph.node(node_id).pos)
        self.addItem(item)
        self.nodes[node_id] = item
        if self.run is not None and node_id in self.run.nodes:
            self._run_changed(node_id)

    def _remove_node(self, node_id: str) -> None:
        item = self.nodes.pop(node_id, None)
        if item is not None:
            self.removeItem(item)
        self._refit_frames()

    def _node_changed(self, node_id: str) -> None:
        if node_id in self.nodes:
            self.nodes[node_id].refresh()
            self.node_geometry_changed(node_id)

    def _node_moved(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            x, y = self.doc.graph.node(node_id).pos
            if (item.pos().x(), item.pos().y()) != (x, y):
                item.setPos(x, y)

    def _link_type(self, link: Link) -> str:
        node = self.doc.graph.node(link.src)
        cls = self.doc.registry.get(node.type)
        out = cls.output_map.get(link.src_output) if cls else None
        return out.type.value if out else ""

    def _add_link(self, link: Link) -> None:
        key = (link.dst, link.dst_input)
        if key in self.wires:
            self.removeItem(self.wires.pop(key))
        type_name = self._link_type(link)
        wire = WireItem(link, theme.type_colour(self.doc.registry, type_name) if type_name
                        else QColor("#999"))
        self.addItem(wire)
        self.wires[key] = wire
        self._sources.add((link.src, link.src_output))
        for nid in (link.src, link.dst):  # placeholders grow ports from their links
            item = self.nodes.get(nid)
            if item is not None and item.placeholder:
                item.refresh()
        self._place_wire(wire)
        self._place_dots(wire)
        for nid in (link.src, link.dst):
            if nid in self.nodes:
                self.nodes[nid].update()

    def _remove_link(self, link: Link) -> None:
        wire = self.wires.pop((link.dst, link.dst_input), None)
        if wire is not None:
            self.removeItem(wire)
        for dot in self.dots.pop((link.dst, link.dst_input), []):
            self.removeItem(dot)
        self._sources = {(l.src, l.src_output) for l in self.doc.graph.links.values()}
        for nid in (link.src, link.dst):
            if nid in self.nodes:
                self.nodes[nid].update()

    def _place_wire(self, wire: WireItem) -> None:
        a, b = self.nodes.get(wire.link.src), self.nodes.get(wire.link.dst)
        if a is None or b is None:
            return
        wire.set_ends(a.port_scene_pos(wire.link.src_output, True),
                      b.port_scene_pos(wire.link.dst_input, False))

    def _place_dots(self, wire: WireItem) -> None:
        key = (wire.link.dst, wire.link.dst_input)
        for dot in self.dots.pop(key, []):
            self.removeItem(dot)
        dots = [RerouteDot(key, i, p, wire.pen().color()) for i, p in enumerate(wire.points())]
        for d in dots:
            self.addItem(d)
        if dots:
            self.dots[key] = dots

    def reroute_moved(self, dot: RerouteDot) -> None:
        """While a dot is dragged, its wire follows (the link is written on release)."""
        wire = self.wires.get(dot.key)
        if wire is None:
            return
        pts = [[d.pos().x(), d.pos().y()] for d in self.dots.get(dot.key, [])]
        a, b = self.nodes.get(wire.link.src), self.nodes.get(wire.link.dst)
        if a is not None and b is not None:
            wire.setPath(wire_path(a.port_scene_pos(wire.link.src_output, True),
                                   b.port_scene_pos(wire.link.dst_input, False),
                                   [QPointF(x, y) for x, y in pts]))

    def node_geometry_changed(self, node_id: str) -> None:
        for wire in self.wires.values():
            if node_id in (wire.link.src, wire.link.dst):
                self._place_wire(wire)
        self._refit_frames()

    def _rebuild_frames(self) -> None:
        for f in self.frames:
            self.removeItem(f)
        self.frames = []
        for i, g in enumerate(self.doc.graph.groups):
            f = FrameItem(i, g.title, g.color)
            self.addItem(f)
            self.frames.append(f)
        self._refit_frames()

    def _refit_frames(self) -> None:
        for f, g in zip(self.frames, self.doc.graph.groups):
            f.title = g.title
            f.fit([self.nodes[n].sceneBoundingRect() for n in g.nodes if n in self.nodes])

    def frame_members(self, frame: FrameItem) -> list[str]:
        return [n for n in self.doc.graph.groups[frame.index].nodes if n in self.nodes]

    def selected_node_ids(self) -> list[str]:
        return [i.node_id for i in self.selectedItems() if isinstance(i, NodeItem)]

    def items_bounds(self, ids: list[str] | None = None) -> QRectF:
        items = [self.nodes[i] for i in (ids if ids is not None else self.nodes)
                 if i in self.nodes]
        if not items:
            return QRectF(-200, -150, 400, 300)
        r = items[0].sceneBoundingRect()
        for it in items[1:]:
            r = r.united(it.sceneBoundingRect())
        return r
