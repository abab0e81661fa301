"""The canvas view: pan, zoom, grid, rubber-band selection, dragging wires between ports,
cutting wires, moving nodes and frames. Every change it makes goes through the document's
undo stack."""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QLineF, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsView

from engine.types import can_connect

from . import theme
from .document import Connect, Move, RemoveItems, SetReroutes
from .scene import FrameItem, GraphScene, NodeItem, Port, RerouteDot, WireItem, wire_path


def compatible(a: Port, b: Port) -> bool:
    """May a wire join these two ports (in either drag direction)?"""
    if a.output == b.output or a.node == b.node:
        return False
    out, inp = (a, b) if a.output else (b, a)
    if not out.type or not inp.type:  # placeholder ports: anything goes
        return True
    return can_connect(out.type, inp.type)


class GraphView(QGraphicsView):
    search_requested = Signal(QPointF, object)  # scene position, Port being dragged or None
    message = Signal(str)

    MIN_ZOOM, MAX_ZOOM = 0.1, 3.0

    def __init__(self, scene: GraphScene):
        super().__init__(scene)
        self.graph_scene = scene
        self.doc = scene.doc
        self.setRenderHints(QPainter.RenderHint.Antialiasing
                            | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSceneRect(QRectF(-50000, -50000, 100000, 100000))
        self.setAcceptDrops(True)
        self.viewport().grabGesture(Qt.GestureType.PinchGesture)
        self._pan: QPointF | None = None
        self._space = False
        self._wire: QGraphicsPathItem | None = None
        self._drag_port: Port | None = None
        self._cut: QGraphicsPathItem | None = None
        self._cut_start: QPointF | None = None
        self._frame_drag: tuple[FrameItem, QPointF, dict[str, QPointF]] | None = None
        self._press_positions: dict[str, tuple[float, float]] = {}

    # ---- zoom and pan ----------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        z = self.zoom()
        factor = max(self.MIN_ZOOM / z, min(self.MAX_ZOOM / z, factor))
        self.scale(factor, factor)
        self._quality()

    def _quality(self) -> None:
        """Antialiasing only where it shows: zoomed far out it doubles the frame time."""
        self.setRenderHint(QPainter.RenderHint.Antialiasing, self.zoom() >= 0.35)

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y() or event.pixelDelta().y()
        if delta:
            self.zoom_by(math.pow(1.0015, delta))

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Type.NativeGesture and \
                event.gestureType() == Qt.NativeGestureType.ZoomNativeGesture:
            self.zoom_by(1 + event.value())
            return True
        if event.type() == QEvent.Type.Gesture:
            pinch = event.gesture(Qt.GestureType.PinchGesture)
            if pinch is not None:
                self.zoom_by(pinch.scaleFactor())
                return True
        return super().viewportEvent(event)

    def frame_rect(self, rect: QRectF) -> None:
        self.resetTransform()
        margin = rect.adjusted(-60, -60, 60, 60)
        self.fitInView(margin, Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom() > 1.0:
            self.resetTransform()
            self.centerOn(rect.center())
        self._quality()

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        painter.fillRect(rect, theme.BACKGROUND)
        z = self.zoom()
        step = 20.0 if z > 0.5 else 100.0
        for spacing, colour in ((step, theme.GRID_MINOR), (step * 5, theme.GRID_MAJOR)):
            if spacing * z < 6:
                continue
            painter.setPen(QPen(colour, 0))
            left = math.floor(rect.left() / spacing) * spacing
            top = math.floor(rect.top() / spacing) * spacing
            lines = []
            x = left
            while x < rect.right():
                lines.append(QLineF(x, rect.top(), x, rect.bottom()))
                x += spacing
            y = top
            while y < rect.bottom():
                lines.append(QLineF(rect.left(), y, rect.right(), y))
                y += spacing
            painter.drawLines(lines)

    # ---- hit testing -----------------------------------------------------------------------
    def node_at(self, scene_pos: QPointF) -> NodeItem | None:
        for item in self.scene().items(scene_pos):
            if isinstance(item, NodeItem):
                return item
        return None

    def port_at(self, scene_pos: QPointF) -> Port | None:
        for item in self.scene().items(QRectF(scene_pos.x() - 10, scene_pos.y() - 10, 20, 20)):
            if isinstance(item, NodeItem):
                port = item.port_at(scene_pos)
                if port is not None:
                    return port
        return None

    def port_scene_pos(self, port: Port) -> QPointF:
        return self.graph_scene.nodes[port.node].port_scene_pos(port.name, port.output)

    # ---- mouse -----------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        pos = self.mapToScene(event.position().toPoint())
        button, mods = event.button(), event.modifiers()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton
                                                      and self._space):
            self._pan = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        cut = (button == Qt.MouseButton.LeftButton and mods & Qt.KeyboardModifier.AltModifier) \
            or (button == Qt.MouseButton.RightButton
                and mods & Qt.KeyboardModifier.ControlModifier)
        if cut:
            self._cut_start = pos
            self._cut = QGraphicsPathItem()
            self._cut.setPen(QPen(theme.FAILED, 1.5, Qt.PenStyle.DashLine))
            self._cut.setZValue(100)
            self.scene().addItem(self._cut)
            return
        if button == Qt.MouseButton.LeftButton:
            port = self.port_at(pos)
            if port is not None:
                self._start_wire(port)
                return
            for item in self.scene().items(pos):
                if isinstance(item, NodeItem):
                    break
                if isinstance(item, FrameItem) and item.title_rect().contains(pos):
                    members = self.graph_scene.frame_members(item)
                    self._frame_drag = (item, pos, {n: self.graph_scene.nodes[n].pos()
                                                    for n in members})
                    return
        super().mousePressEvent(event)
        self._press_positions = {i: (n.pos().x(), n.pos().y())
                                 for i, n in self.graph_scene.nodes.items() if n.isSelected()}

    def mouseMoveEvent(self, event) -> None:
        pos = self.mapToScene(event.position().toPoint())
        if self._pan is not None:
            d = event.position() - self._pan
            self._pan = event.position()
            self.horizontalScrollBar().setValue(int(self.horizontalScrollBar().value() - d.x()))
            self.verticalScrollBar().setValue(int(self.verticalScrollBar().value() - d.y()))
            return
        if self._cut is not None:
            path = QPainterPath(self._cut_start)
            path.lineTo(pos)
            self._cut.setPath(path)
            return
        if self._wire is not None:
            start = self.port_scene_pos(self._drag_port)
            a, b = (start, pos) if self._drag_port.output else (pos, start)
            self._wire.setPath(wire_path(a, b))
            return
        if self._frame_drag is not None:
            frame, origin, starts = self._frame_drag
            d = pos - origin
            for n, p0 in starts.items():
                self.graph_scene.nodes[n].setPos(p0 + d)
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        pos = self.mapToScene(event.position().toPoint())
        if self._pan is not None:
            self._pan = None
            self.viewport().unsetCursor()
            return
        if self._cut is not None:
            self._finish_cut(pos)
            return
        if self._wire is not None:
            self._finish_wire(pos)
            return
        if self._frame_drag is not None:
            _frame, _origin, starts = self._frame_drag
            self._frame_drag = None
            self._commit_moves({n: (p.x(), p.y()) for n, p in starts.items()}, "Move frame")
            return
        super().mouseReleaseEvent(event)
        if self._press_positions:
            self._commit_moves(self._press_positions, "Move")
            self._press_positions = {}
        self._commit_dots()

    def _commit_dots(self) -> None:
        """Dots dragged with the mouse: write their new places into their links."""
        for key, dots in list(self.graph_scene.dots.items()):
            link = self.doc.graph.links.get(key)
            if link is None:
                continue
            now = [[d.pos().x(), d.pos().y()] for d in dots]
            if now != (link.extra.get("reroutes") or []):
                self.doc.push(SetReroutes(self.doc, key, now, "Move reroute"))

    def mouseDoubleClickEvent(self, event) -> None:
        pos = self.mapToScene(event.position().toPoint())
        if self.node_at(pos) is None:
            dot = self.dot_at(pos)
            if dot is not None:  # double-click a reroute dot: remove it
                pts = [[d.pos().x(), d.pos().y()] for d in self.graph_scene.dots[dot.key]
                       if d is not dot]
                self.doc.push(SetReroutes(self.doc, dot.key, pts, "Remove reroute"))
                return
            wire = self.wire_at(pos)
            if wire is not None:  # double-click a wire: add a reroute dot there
                self.add_reroute(wire, pos)
                return
            self.search_requested.emit(pos, None)
            return
        super().mouseDoubleClickEvent(event)

    def dot_at(self, pos: QPointF) -> RerouteDot | None:
        return next((i for i in self.scene().items(pos) if isinstance(i, RerouteDot)), None)

    def wire_at(self, pos: QPointF, slack: float = 6.0) -> WireItem | None:
        box = QRectF(pos.x() - slack, pos.y() - slack, 2 * slack, 2 * slack)
        for item in self.scene().items(box):
            if isinstance(item, WireItem):
                path = item.path()
                for i in range(41):
                    if (path.pointAtPercent(i / 40) - pos).manhattanLength() < 3 * slack:
                        return item
        return None

    def add_reroute(self, wire: WireItem, pos: QPointF) -> None:
        pts = wire.points()
        a = self.graph_scene.nodes[wire.link.src].port_scene_pos(wire.link.src_output, True)
        # insert it between the stops it lies between, by distance along x
        stops = [a, *pts]
        index = sum(1 for s in stops[1:] if s.x() < pos.x())
        new = [[p.x(), p.y()] for p in pts]
        new.insert(index, [pos.x(), pos.y()])
        self.doc.push(SetReroutes(self.doc, (wire.link.dst, wire.link.dst_input), new,
                                  "Add reroute"))

    def _commit_moves(self, before: dict[str, tuple[float, float]], text: str) -> None:
        moves = {}
        for i, old in before.items():
            item = self.graph_scene.nodes.get(i)
            if item is None:
                continue
            new = (item.pos().x(), item.pos().y())
            if new != tuple(old):
                moves[i] = (tuple(old), new)
        if moves:
            self.doc.push(Move(self.doc, moves, text))

    # ---- wires -----------------------------------------------------------------------------
    def _start_wire(self, port: Port) -> None:
        if not port.output and (port.node, port.name) in self.doc.graph.links:
            # picking up an input's wire: carry it from its source, to re-plug or drop
            link = self.doc.graph.links[(port.node, port.name)]
            self.doc.push(RemoveItems(self.doc, [], [(link.dst, link.dst_input)],
                                      "Disconnect"))
            src_item = self.graph_scene.nodes[link.src]
            port = next(p for p in src_item.outputs if p.name == link.src_output)
        self._drag_port = port
        self._wire = QGraphicsPathItem()
        colour = theme.type_colour(self.doc.registry, port.type)
        self._wire.setPen(QPen(colour, 2.2, Qt.PenStyle.DashLine))
        self._wire.setZValue(50)
        self.scene().addItem(self._wire)
        for item in self.graph_scene.nodes.values():
            item.highlight = {p for p in item.outputs + item.inputs if compatible(port, p)}
            item.update()

    def _clear_wire(self) -> None:
        if self._wire is not None:
            self.scene().removeItem(self._wire)
        self._wire = None
        for item in self.graph_scene.nodes.values():
            if item.highlight:
                item.highlight = set()
                item.update()

    def _finish_wire(self, pos: QPointF) -> None:
        start = self._drag_port
        self._clear_wire()
        self._drag_port = None
        target = self.port_at(pos)
        if target is None:
            if self.node_at(pos) is None:
                self.search_requested.emit(pos, start)
            return
        if target.output == start.output or target.node == start.node:
            return
        if not compatible(start, target):
            self.message.emit(f"Cannot connect {start.type or '?'} to {target.type or '?'}")
            return
        self.connect_ports(start, target)

    def connect_ports(self, a: Port, b: Port) -> bool:
        out, inp = (a, b) if a.output else (b, a)
        why = self.doc.check_link((out.node, out.name), (inp.node, inp.name))
        if why:
            self.message.emit(why[0].upper() + why[1:])
            return False
        self.doc.push(Connect(self.doc, (out.node, out.name), (inp.node, inp.name)))
        return True

    def _finish_cut(self, pos: QPointF) -> None:
        self.scene().removeItem(self._cut)
        self._cut = None
        stroke = QPainterPath(self._cut_start)
        stroke.lineTo(pos)
        hits = [w.link for w in self.graph_scene.wires.values()
                if isinstance(w, WireItem) and w.path().intersects(stroke)
                and _crosses(w.path(), self._cut_start, pos)]
        if hits:
            self.doc.push(RemoveItems(self.doc, [], [(l.dst, l.dst_input) for l in hits],
                                      "Cut wires" if len(hits) > 1 else "Cut wire"))

    # ---- keys ------------------------------------------------------------------------------
    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            return
        if event.key() == Qt.Key.Key_Tab:
            cursor = self.mapFromGlobal(self.cursor().pos())
            inside = self.viewport().rect().contains(cursor)
            pos = self.mapToScene(cursor if inside else self.viewport().rect().center())
            self.search_requested.emit(pos, None)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            return
        super().keyReleaseEvent(event)

    def focusNextPrevChild(self, next: bool) -> bool:
        return False  # Tab opens the node search instead of moving focus


def _crosses(path: QPainterPath, a: QPointF, b: QPointF, samples: int = 40) -> bool:
    """Does the segment a-b cross the curve? (QPainterPath.intersects treats the curve as a
    filled area, which would cut wires the stroke only came near.)"""
    prev = path.pointAtPercent(0)
    for i in range(1, samples + 1):
        cur = path.pointAtPercent(i / samples)
        kind, _ = QLineF(prev, cur).intersects(QLineF(a, b))
        if kind == QLineF.IntersectionType.BoundedIntersection:
            return True
        prev = cur
    return False
