"""The docker's widgets and layout (the view); panel.py adds the behaviour.

Every widget a test or a script may drive has a stable object name, listed in OBJECT_NAMES.
"""
from __future__ import annotations

from .client import MAX_N
from .qt import (QAbstractItemView, QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListView,
                 QListWidget, QPixmap, QPushButton, QRegularExpression, QRegularExpressionValidator, QSizePolicy,
                 QSlider, QSpinBox, Qt, QToolButton, QVBoxLayout, QWidget)

OBJECT_NAMES = ("ganvasStatus", "ganvasServerUrl", "ganvasConnect", "ganvasStartServer", "ganvasModel", "ganvasPrompt",
                "ganvasStyle", "ganvasSeed", "ganvasSeedLock", "ganvasSeedRandom", "ganvasCount", "ganvasSize",
                "ganvasTruncation", "ganvasLive", "ganvasGenerate", "ganvasCancel", "ganvasMessage", "ganvasResults",
                "ganvasInsertLayer", "ganvasInsertSelection", "ganvasHistory", "ganvasServerCommand", "ganvasApiKey")

SIZES = (0, 256, 512, 1024)            # 0 = the model's native resolution
THUMB = 96
# Until the server names the chosen model's style words (GET /v1/models "styles"), offer none.
STYLE_SUGGESTIONS = ("",)


class DockerWidgets(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ganvasPanel")
        self._build()

    # --- layout --------------------------------------------------------------------------------------------
    def _named(self, widget, name: str, tip: str | None = None):
        widget.setObjectName(name)
        if tip:
            widget.setToolTip(tip)
        return widget

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)

        self.status = self._named(QLabel("connecting\u2026"), "ganvasStatus")
        self.status.setWordWrap(True)
        root.addWidget(self.status)

        row = QHBoxLayout()
        self.url = self._named(QLineEdit(), "ganvasServerUrl", "ganvas server, e.g. http://127.0.0.1:8000")
        self.connect_button = self._named(QPushButton("Connect"), "ganvasConnect")
        row.addWidget(self.url, 1)
        row.addWidget(self.connect_button)
        root.addLayout(row)
        self.start_button = self._named(QPushButton("Start local server"), "ganvasStartServer",
                                        "run the Server command (below) and connect to it; it stops when Krita closes")
        root.addWidget(self.start_button)

        form = QFormLayout()
        self.model = self._named(QComboBox(), "ganvasModel", "models offered by the server (GET /v1/models)")
        form.addRow("Model", self.model)
        self.prompt = self._named(QLineEdit(), "ganvasPrompt")
        self.prompt.setPlaceholderText("describe the image; Enter generates")
        form.addRow("Prompt", self.prompt)
        self.style = self._named(QComboBox(), "ganvasStyle", 'appended to the prompt as "; <style> style"')
        self.style.setEditable(True)
        self.style.addItems(STYLE_SUGGESTIONS)
        form.addRow("Style", self.style)

        seed_row = QHBoxLayout()
        self.seed = self._named(QLineEdit("0"), "ganvasSeed", "image i of a batch uses seed + i")
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression(r"[0-9]{0,16}"), self.seed))
        self.seed_lock = self._named(QToolButton(), "ganvasSeedLock",
                                     "locked: Generate keeps this seed; unlocked: a new seed each time")
        self.seed_lock.setText("Lock")
        self.seed_lock.setCheckable(True)
        self.seed_random = self._named(QToolButton(), "ganvasSeedRandom", "draw a new random seed")
        self.seed_random.setText("Random")
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(self.seed_random)
        form.addRow("Seed", seed_row)

        count_row = QHBoxLayout()
        self.count = self._named(QSpinBox(), "ganvasCount", "images per Generate")
        self.count.setRange(1, MAX_N)
        self.size = self._named(QComboBox(), "ganvasSize", "output size; larger than native is a resize")
        for side in SIZES:
            self.size.addItem("native" if side == 0 else f"{side} px", side)
        count_row.addWidget(self.count)
        count_row.addWidget(QLabel("Size"))
        count_row.addWidget(self.size, 1)
        form.addRow("Count", count_row)

        trunc_row = QHBoxLayout()
        self.truncation = self._named(QSlider(Qt.Orientation.Horizontal), "ganvasTruncation",
                                      "truncation: lower is more typical, higher more varied")
        self.truncation.setRange(1, 100)
        self.truncation_label = QLabel("1.00")
        trunc_row.addWidget(self.truncation, 1)
        trunc_row.addWidget(self.truncation_label)
        form.addRow("Truncation", trunc_row)
        root.addLayout(form)

        gen_row = QHBoxLayout()
        self.live = self._named(QCheckBox("Live"), "ganvasLive", "regenerate while you type")
        self.generate_button = self._named(QPushButton("Generate"), "ganvasGenerate")
        self.generate_button.setDefault(True)
        self.cancel_button = self._named(QPushButton("Cancel"), "ganvasCancel")
        gen_row.addWidget(self.live)
        gen_row.addWidget(self.generate_button, 1)
        gen_row.addWidget(self.cancel_button)
        root.addLayout(gen_row)

        self.message = self._named(QLabel(""), "ganvasMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.message)

        self.results = self._named(QListWidget(), "ganvasResults", "results; double-click inserts as a layer")
        self.results.setViewMode(QListView.ViewMode.IconMode)
        self.results.setIconSize(QPixmap(THUMB, THUMB).size())
        self.results.setResizeMode(QListView.ResizeMode.Adjust)
        self.results.setMovement(QListView.Movement.Static)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results.setMinimumHeight(THUMB + 40)
        self.results.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        root.addWidget(self.results, 1)

        insert_row = QHBoxLayout()
        self.insert_layer_button = self._named(QPushButton("Insert as layer"), "ganvasInsertLayer",
                                               "the chosen result as a new layer, centred, at its own size")
        self.insert_selection_button = self._named(QPushButton("Insert into selection"), "ganvasInsertSelection",
                                                   "the chosen result scaled to the selection, as a new layer")
        insert_row.addWidget(self.insert_layer_button)
        insert_row.addWidget(self.insert_selection_button)
        root.addLayout(insert_row)

        history_row = QHBoxLayout()
        history_row.addWidget(QLabel("History"))
        self.history_box = self._named(QComboBox(), "ganvasHistory", "this session's results")
        self.history_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        history_row.addWidget(self.history_box, 1)
        root.addLayout(history_row)

        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Server settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced = QWidget()
        adv = QFormLayout(self.advanced)
        adv.setContentsMargins(0, 0, 0, 0)
        self.server_command = self._named(QLineEdit(), "ganvasServerCommand",
                                          "command that starts a local server; {port} and {host} come from the URL")
        self.api_key = self._named(QLineEdit(), "ganvasApiKey", "only for servers started with --api-key")
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        adv.addRow("Command", self.server_command)
        adv.addRow("API key", self.api_key)
        self.advanced.setVisible(False)
        self.advanced_toggle.toggled.connect(self.advanced.setVisible)
        root.addWidget(self.advanced_toggle)
        root.addWidget(self.advanced)
