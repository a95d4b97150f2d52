"""A form of input widgets built from an attribution method's declared Parameters."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

LARGEST = 1_000_000


class ParameterForm(QWidget):
    """One editor per parameter of the chosen method: choices, switches, numbers or text."""

    changed = Signal()   # a value was edited, or the form was rebuilt for another method

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._editors: dict[str, tuple[QWidget, Any]] = {}
        self.method: str | None = None

    def set_method(self, name: str) -> None:
        """Rebuild the form for the method registered under ``name``, every editor at its default."""
        from ..core.attribution import method_class

        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._editors = {}
        self.method = name
        for key, parameter in method_class(name).parameters.items():
            editor = _editor(parameter)
            editor.setToolTip(parameter.help)
            editor.setObjectName(f"parameter_{key}")
            self._layout.addRow(key.replace("_", " "), editor)
            self._editors[key] = (editor, parameter)
            _edited(editor).connect(lambda *_: self.changed.emit())
        self.changed.emit()

    def editor(self, key: str) -> QWidget:
        """The editor of parameter ``key``."""
        return self._editors[key][0]

    def set_values(self, values: dict[str, Any]) -> None:
        """Put known parameters' values into their editors (other keys are ignored)."""
        for key, value in values.items():
            if key not in self._editors:
                continue
            editor, parameter = self._editors[key]
            if isinstance(editor, QComboBox):
                if value in parameter.choices:
                    editor.setCurrentIndex(list(parameter.choices).index(value))
            elif isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.setValue(value)
            else:
                editor.setText("" if value is None or value == parameter.default else str(value))

    def values(self) -> dict[str, Any]:
        """The parameters as typed values (text left empty means the default)."""
        out: dict[str, Any] = {}
        for key, (editor, parameter) in self._editors.items():
            if isinstance(editor, QComboBox):
                out[key] = parameter.choices[editor.currentIndex()]
            elif isinstance(editor, QCheckBox):
                out[key] = editor.isChecked()
            elif isinstance(editor, QSpinBox):
                out[key] = int(editor.value())
            elif isinstance(editor, QDoubleSpinBox):
                out[key] = float(editor.value())
            else:
                out[key] = editor.text().strip() or parameter.default
        return out


def _edited(editor: QWidget):
    """The signal an editor sends when its value changes."""
    if isinstance(editor, QComboBox):
        return editor.currentIndexChanged
    if isinstance(editor, QCheckBox):
        return editor.toggled
    if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
        return editor.valueChanged
    return editor.textChanged


def _editor(parameter) -> QWidget:
    """The input widget that suits a parameter: a list of choices, a switch, a number box or a text field."""
    default = parameter.default
    if parameter.choices is not None:
        box = QComboBox()
        box.addItems([str(c) for c in parameter.choices])
        box.setCurrentIndex(list(parameter.choices).index(default))
        return box
    if isinstance(default, bool):
        check = QCheckBox()
        check.setChecked(default)
        return check
    if isinstance(default, int):
        spin = QSpinBox()
        spin.setRange(int(parameter.minimum if parameter.minimum is not None else -LARGEST),
                      int(parameter.maximum if parameter.maximum is not None else LARGEST))
        spin.setValue(default)
        if parameter.auto:
            spin.setSpecialValueText("auto")   # 0: chosen for the case and the device when Run starts
        return spin
    if isinstance(default, float):
        spin = QDoubleSpinBox()
        spin.setDecimals(6)
        spin.setRange(float(parameter.minimum if parameter.minimum is not None else -LARGEST),
                      float(parameter.maximum if parameter.maximum is not None else LARGEST))
        spin.setSingleStep(max(abs(default) / 10, 1e-6) if default else 0.1)
        spin.setValue(default)
        return spin
    text = QLineEdit()
    text.setPlaceholderText(str(default) if default else "default")
    return text
