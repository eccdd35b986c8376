"""The docker's widgets and layout (the view); panel.py adds the behaviour.

Every widget a test or a script may drive has a stable object name, listed in OBJECT_NAMES.

Krita gives a new docker whatever is left at the bottom of its right column (262x228 px on a fresh
profile at 1920x1080), so the layout puts what a painter needs first in one compact block at the top
(`essentials`: status + Start, prompt, Generate, message, results, Insert, fit/scaling) and asks for
that block's height as the docker's minimum; the options and server settings follow below it and the
whole panel scrolls.
"""

from __future__ import annotations

from .client import MAX_N
from .qt import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QEvent,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QPushButton,
    QRegularExpression,
    QRegularExpressionValidator,
    QSize,
    QSizePolicy,
    QSlider,
    QSpinBox,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

OBJECT_NAMES = (
    "ganvasStatus",
    "ganvasServerUrl",
    "ganvasConnect",
    "ganvasStartServer",
    "ganvasModel",
    "ganvasPrompt",
    "ganvasStyle",
    "ganvasSeed",
    "ganvasSeedLock",
    "ganvasSeedRandom",
    "ganvasCount",
    "ganvasSize",
    "ganvasTruncation",
    "ganvasLive",
    "ganvasGenerate",
    "ganvasCancel",
    "ganvasMessage",
    "ganvasResults",
    "ganvasInsertLayer",
    "ganvasInsertSelection",
    "ganvasFit",
    "ganvasScaling",
    "ganvasHistory",
    "ganvasOptionsToggle",
    "ganvasServerToggle",
    "ganvasServerCommand",
    "ganvasApiKey",
    "ganvasEssentials",
)

# Output sizes offered when the server does not list the chosen model's own (GET /v1/models "sizes").
# 0 = the model's native resolution; add sizes here, or let the server advertise them per model.
DEFAULT_SIZES = (0, 256, 512, 1024)
SIZES = DEFAULT_SIZES  # kept for older scripts
# How a result fills the canvas or the selection (canvas.FITS / canvas.SCALINGS hold the same keys).
FIT_CHOICES = (
    ("inside", "Fit inside", "the whole image, as large as fits, aspect ratio kept"),
    ("fill", "Fill (crop)", "covers the whole area, aspect ratio kept; the overflow is cropped"),
    ("actual", "Actual size", "the image's own pixels, centred"),
)
SCALING_CHOICES = (
    ("smooth", "Smooth", "smooth (bilinear) scaling, for photos and paintings"),
    ("pixel", "Pixel art", "nearest-neighbour scaling: hard pixel edges, no new colours"),
)
THUMB = 72
# The status and message lines keep a fixed height (longer text is cut; the tooltip has all of it), so the
# essentials block has one known height and a new message never pushes Insert out of view.
STATUS_LINES = 3
MESSAGE_LINES = 3
# Until the server names the chosen model's style words (GET /v1/models "styles"), offer none.
STYLE_SUGGESTIONS = ("",)


def size_label(side: int, native: int | None = None) -> str:
    if side:
        return f"{side} px"
    return f"native ({native} px)" if native else "native"


class DockerWidgets(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ganvasPanel")
        self.minimum_listener = None  # called with essentials_height() whenever fonts/style change it
        self._build()
        self._fix_text_heights()

    # --- layout --------------------------------------------------------------------------------------------
    def _named(self, widget, name: str, tip: str | None = None):
        widget.setObjectName(name)
        if tip:
            widget.setToolTip(tip)
        return widget

    def _section_toggle(self, text: str, name: str, tip: str) -> QToolButton:
        button = self._named(QToolButton(), name, tip)
        button.setText(text)
        button.setCheckable(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setAutoRaise(True)
        button.toggled.connect(
            lambda on: button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        )
        button.setArrowType(Qt.ArrowType.RightArrow)
        return button

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        root.setSpacing(4)

        # --- essentials: what a painter needs, in the first ~300 px ----------------------------------------
        self.essentials = self._named(QWidget(), "ganvasEssentials")
        top = QVBoxLayout(self.essentials)
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(4)

        status_row = QHBoxLayout()
        self.status = self._named(QLabel("connecting\u2026"), "ganvasStatus")
        self.status.setWordWrap(True)
        self.status.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.start_button = self._named(
            QPushButton("Start local server"),
            "ganvasStartServer",
            "run the command under Server > Command on this computer and connect to it; it stops when Krita closes",
        )
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.start_button, 0, Qt.AlignmentFlag.AlignTop)
        top.addLayout(status_row)

        self.prompt = self._named(QLineEdit(), "ganvasPrompt", "what to draw; Enter generates")
        self.prompt.setPlaceholderText("describe the image; Enter generates")
        self.prompt.setClearButtonEnabled(True)
        top.addWidget(self.prompt)

        gen_row = QHBoxLayout()
        self.live = self._named(QCheckBox("Live"), "ganvasLive", "regenerate while you type")
        self.generate_button = self._named(QPushButton("Generate"), "ganvasGenerate")
        self.generate_button.setDefault(True)
        self.cancel_button = self._named(
            QPushButton("Cancel"), "ganvasCancel", "stop waiting for the request in flight"
        )
        gen_row.addWidget(self.live)
        gen_row.addWidget(self.generate_button, 1)
        gen_row.addWidget(self.cancel_button)
        top.addLayout(gen_row)

        self.message = self._named(QLabel(""), "ganvasMessage")
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top.addWidget(self.message)

        self.results = self._named(QListWidget(), "ganvasResults", "results; double-click inserts as a layer")
        self.results.setViewMode(QListView.ViewMode.IconMode)
        self.results.setIconSize(QSize(THUMB, THUMB))
        self.results.setGridSize(QSize(THUMB + 14, THUMB + 22))
        self.results.setResizeMode(QListView.ResizeMode.Adjust)
        self.results.setMovement(QListView.Movement.Static)
        self.results.setWrapping(True)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results.setMinimumHeight(THUMB + 30)  # one row of thumbnails, always
        self.results.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        top.addWidget(self.results, 1)

        insert_row = QHBoxLayout()
        self.insert_layer_button = self._named(
            QPushButton("Insert as layer"),
            "ganvasInsertLayer",
            "the chosen result as a new layer, fitted to the canvas as Fit says",
        )
        self.insert_selection_button = self._named(
            QPushButton("Into selection"),
            "ganvasInsertSelection",
            "Insert into selection: the chosen result fitted to the selection "
            "as Fit says and cut to its shape, as a new layer",
        )
        insert_row.addWidget(self.insert_layer_button, 1)
        insert_row.addWidget(self.insert_selection_button, 1)
        top.addLayout(insert_row)

        fit_row = QHBoxLayout()
        self.fit = self._named(QComboBox(), "ganvasFit", "how the image fills the canvas or the selection")
        for key, label, tip in FIT_CHOICES:
            self.fit.addItem(label, key)
            self.fit.setItemData(self.fit.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.scaling = self._named(QComboBox(), "ganvasScaling", "how the image is scaled when inserted")
        for key, label, tip in SCALING_CHOICES:
            self.scaling.addItem(label, key)
            self.scaling.setItemData(self.scaling.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        fit_row.addWidget(self.fit, 1)
        fit_row.addWidget(self.scaling, 1)
        top.addLayout(fit_row)
        root.addWidget(self.essentials, 1)  # extra height goes to the results

        # --- options: the request's details and the session's history ----------------------------------------
        self.options_toggle = self._section_toggle(
            "Options", "ganvasOptionsToggle", "model, style, seed, count, size, truncation, history"
        )
        root.addWidget(self.options_toggle)
        self.options = QWidget()
        form = QFormLayout(self.options)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.history_box = self._named(QComboBox(), "ganvasHistory", "this session's results, newest first")
        form.addRow("History", self.history_box)
        self.model = self._named(QComboBox(), "ganvasModel", "models offered by the server (GET /v1/models)")
        form.addRow("Model", self.model)
        self.style = self._named(
            QComboBox(),
            "ganvasStyle",
            "style word, put into the prompt by the model's prompt template "
            '(emoji64: "<prompt>; <style> style"); leave it empty for a model without one',
        )
        self.style.setEditable(True)
        self.style.addItems(STYLE_SUGGESTIONS)
        form.addRow("Style", self.style)

        seed_row = QHBoxLayout()
        self.seed = self._named(
            QLineEdit("0"),
            "ganvasSeed",
            "the seed of the next Generate (image i of a batch uses seed + i); type one to "
            "reproduce a layer's \u201cseed N\u201d",
        )
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression(r"[0-9]{0,16}"), self.seed))
        self.seed.setMinimumWidth(40)
        self.seed_lock = self._named(
            QToolButton(),
            "ganvasSeedLock",
            "locked: the seed stays after each Generate; unlocked: a new random seed is "
            "drawn after each Generate (a typed seed is always used first)",
        )
        self.seed_lock.setText("Lock")
        self.seed_lock.setCheckable(True)
        self.seed_random = self._named(QToolButton(), "ganvasSeedRandom", "draw a new random seed")
        self.seed_random.setText("Random")
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(self.seed_random)
        form.addRow("Seed", seed_row)

        self.count = self._named(QSpinBox(), "ganvasCount", "images per Generate")
        self.count.setRange(1, MAX_N)
        form.addRow("Count", self.count)
        self.size = self._named(
            QComboBox(),
            "ganvasSize",
            "output size; above native the server's upsampler draws the detail (never a stretched image)",
        )
        for side in DEFAULT_SIZES:
            self.size.addItem(size_label(side), side)
        form.addRow("Size", self.size)

        trunc_row = QHBoxLayout()
        self.truncation = self._named(
            QSlider(Qt.Orientation.Horizontal),
            "ganvasTruncation",
            "truncation: lower is more typical, higher more varied",
        )
        self.truncation.setRange(1, 100)
        self.truncation_label = QLabel("1.00")
        trunc_row.addWidget(self.truncation, 1)
        trunc_row.addWidget(self.truncation_label)
        form.addRow("Truncation", trunc_row)
        self.options_toggle.toggled.connect(self.options.setVisible)
        self.options_toggle.setChecked(True)
        root.addWidget(self.options)

        # --- server: where the images come from ---------------------------------------------------------------
        self.server_toggle = self._section_toggle(
            "Server", "ganvasServerToggle", "server URL, the command Start local server runs, API key"
        )
        root.addWidget(self.server_toggle)
        self.server_box = QWidget()
        adv = QFormLayout(self.server_box)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        url_row = QHBoxLayout()
        self.url = self._named(QLineEdit(), "ganvasServerUrl", "ganvas server, e.g. http://127.0.0.1:8000")
        self.url.setMinimumWidth(60)
        self.connect_button = self._named(QPushButton("Connect"), "ganvasConnect", "check the server at this URL now")
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.connect_button)
        adv.addRow("URL", url_row)
        self.server_command = self._named(
            QLineEdit(),
            "ganvasServerCommand",
            "what Start local server runs; {port} and {host} come from the URL. "
            "`ganvas krita install` fills in the full path of ganvas",
        )
        self.server_command.setMinimumWidth(60)
        self.api_key = self._named(QLineEdit(), "ganvasApiKey", "only for servers started with --api-key")
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setMinimumWidth(60)
        adv.addRow("Command", self.server_command)
        adv.addRow("API key", self.api_key)
        self.server_box.setVisible(False)
        self.server_toggle.toggled.connect(self.server_box.setVisible)
        root.addWidget(self.server_box)
        for combo in self.findChildren(QComboBox):  # narrow columns: long entries elide instead of widening the docker
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(4)
        # old name, kept for scripts written against the first layout
        self.advanced_toggle, self.advanced = self.server_toggle, self.server_box

    def _fix_text_heights(self) -> None:
        line = self.fontMetrics().lineSpacing()
        self.status.setFixedHeight(line * STATUS_LINES + 2)
        self.message.setFixedHeight(line * MESSAGE_LINES + 2)
        if self.minimum_listener is not None:
            self.minimum_listener(self.essentials_height())

    def changeEvent(self, event):
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fix_text_heights()

    def showEvent(self, event):
        super().showEvent(event)
        self._fix_text_heights()

    def essentials_height(self) -> int:
        """The height that shows status, prompt, Generate, message, results and Insert at once."""
        margins = self.layout().contentsMargins()
        return self.essentials.minimumSizeHint().height() + margins.top() + margins.bottom()
