"""Colours and metrics of the canvas, in one place."""

from __future__ import annotations

from PySide6.QtGui import QColor

from engine.types import UNKNOWN_COLOUR

CATEGORY_COLOURS = {"loaders": "#4a3f6b", "sampling": "#6b3f3f", "conditioning": "#6b5a33",
                    "latent": "#6b3f4f", "image": "#2f4f6b", "mask": "#2f5b3f",
                    "controlnet": "#2f5b57", "upscale": "#5b4a3f", "primitives": "#444a52",
                    "hair": "#5b3f6b"}

BACKGROUND = QColor("#1e1f22")
GRID_MINOR = QColor("#232428")
GRID_MAJOR = QColor("#2a2c31")
NODE_BODY = QColor("#2b2d31")
NODE_BORDER = QColor("#111214")
SELECTED = QColor("#e8c547")
TEXT = QColor("#e6e6e6")
DIM_TEXT = QColor("#9aa0a6")
RUNNING = QColor("#4fc3f7")
FAILED = QColor("#e05252")
CACHED = QColor("#7cb342")
PLACEHOLDER = QColor("#5a2e2e")

NODE_WIDTH = 220.0
TITLE_H = 26.0
ROW_H = 20.0
PORT_R = 5.0
THUMB = 96


def type_colour(registry, type_name: str) -> QColor:
    """A link type's colour, as its package registered it (grey for an unknown type)."""
    t = registry.link_type(type_name)
    return QColor(t.colour if t is not None else UNKNOWN_COLOUR)


def category_colour(category: str) -> QColor:
    return QColor(CATEGORY_COLOURS.get(category.split("/")[0], "#3a3d42"))


STYLE_SHEET = """
QMainWindow, QDockWidget, QWidget { background: #232428; color: #e6e6e6; }
QDockWidget::title { background: #2b2d31; padding: 4px; }
QLineEdit, QPlainTextEdit, QSpinBox, QDoubleSpinBox, QComboBox, QListWidget, QTreeWidget {
    background: #1b1c1f; border: 1px solid #3a3d42; border-radius: 3px; padding: 2px; }
QPushButton { background: #34373c; border: 1px solid #44474d; border-radius: 3px;
    padding: 4px 10px; }
QPushButton:hover { background: #3d4046; }
QPushButton:disabled { color: #777; }
QProgressBar { border: 1px solid #3a3d42; border-radius: 3px; text-align: center;
    background: #1b1c1f; }
QProgressBar::chunk { background: #3f7fbf; }
QMenuBar, QMenu { background: #2b2d31; }
QMenu::item:selected, QMenuBar::item:selected { background: #3f7fbf; }
QStatusBar { background: #2b2d31; }
"""
