"""Settings: model folders, device, cache budget, theme. Stored in QSettings; the device and
cache settings apply to the next run's executor."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class SettingsDialog(QDialog):
    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Loom settings")
        lay = QVBoxLayout(self)
        form = QFormLayout()
        lay.addLayout(form)
        folders = QWidget()
        fl = QVBoxLayout(folders)
        fl.setContentsMargins(0, 0, 0, 0)
        self.folders = QListWidget()
        value = settings.value("model_folders") or []
        self.folders.addItems([value] if isinstance(value, str) else list(value))
        row = QHBoxLayout()
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add_folder)
        remove.clicked.connect(lambda: [self.folders.takeItem(self.folders.row(i))
                                        for i in self.folders.selectedItems()])
        row.addWidget(add)
        row.addWidget(remove)
        fl.addWidget(self.folders)
        fl.addLayout(row)
        form.addRow("Model folders", folders)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setCurrentText(str(settings.value("device") or "auto"))
        form.addRow("Device", self.device)
        self.cache = QDoubleSpinBox()
        self.cache.setRange(0.25, 256)
        self.cache.setSuffix(" GB")
        self.cache.setValue(float(settings.value("cache_gb") or 4.0))
        form.addRow("Output cache", self.cache)
        self.theme = QComboBox()
        self.theme.addItems(["dark"])
        form.addRow("Theme", self.theme)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def _add_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.folders.addItem(path)

    def accept(self) -> None:
        self.settings.setValue("model_folders", [self.folders.item(i).text()
                                                 for i in range(self.folders.count())])
        self.settings.setValue("device", self.device.currentText())
        self.settings.setValue("cache_gb", self.cache.value())
        self.settings.setValue("theme", self.theme.currentText())
        super().accept()
