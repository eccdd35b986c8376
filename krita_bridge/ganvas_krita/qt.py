"""The one place that imports Qt: PyQt5 (Krita 5) now, PyQt6 (Krita 6) when that is what Krita ships.

The rest of the plugin imports Qt names from here and spells enums in their scoped form
(`Qt.AlignmentFlag.AlignLeft`, `QImage.Format.Format_ARGB32`), which both bindings accept, so moving
to PyQt6 means touching this file only.
"""

try:
    from PyQt5 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt5"
except ImportError:  # Krita 6
    from PyQt6 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt6"

Signal = QtCore.pyqtSignal
QEvent, QObject, QTimer, Qt = QtCore.QEvent, QtCore.QObject, QtCore.QTimer, QtCore.Qt
QRegularExpression, QByteArray, QSize, QRectF = (
    QtCore.QRegularExpression,
    QtCore.QByteArray,
    QtCore.QSize,
    QtCore.QRectF,
)
QRunnable, QThread, QThreadPool = QtCore.QRunnable, QtCore.QThread, QtCore.QThreadPool

QColor, QIcon, QImage, QPainter, QPixmap = QtGui.QColor, QtGui.QIcon, QtGui.QImage, QtGui.QPainter, QtGui.QPixmap
QRegularExpressionValidator = QtGui.QRegularExpressionValidator

_W = QtWidgets
QAbstractItemView, QApplication, QCheckBox, QComboBox = (
    _W.QAbstractItemView,
    _W.QApplication,
    _W.QCheckBox,
    _W.QComboBox,
)
QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel = _W.QFormLayout, _W.QFrame, _W.QGroupBox, _W.QHBoxLayout, _W.QLabel
QLineEdit, QListView, QListWidget, QListWidgetItem = _W.QLineEdit, _W.QListView, _W.QListWidget, _W.QListWidgetItem
QPlainTextEdit, QPushButton, QScrollArea, QSizePolicy = (
    _W.QPlainTextEdit,
    _W.QPushButton,
    _W.QScrollArea,
    _W.QSizePolicy,
)
QSlider, QSpinBox, QToolButton, QVBoxLayout, QWidget = (
    _W.QSlider,
    _W.QSpinBox,
    _W.QToolButton,
    _W.QVBoxLayout,
    _W.QWidget,
)


def image_bytes(image: "QImage") -> bytes:
    """The raw pixel bytes of a QImage (rows are tightly packed for 32-bit formats)."""
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    return bytes(ptr)
