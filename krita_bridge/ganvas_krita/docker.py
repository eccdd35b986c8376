"""The Krita docker: a DockWidget holding the panel in a scroll area, wired to Krita's application signals.

Krita puts a docker it has no saved place for at the bottom of its right column, in whatever height
is left (262x228 px on a fresh profile at 1920x1080). The scroll area's minimum height is the panel's
essentials (status, prompt, Generate, message, results, Insert), so Qt's dock layout makes room for
them by shrinking the dockers above to their own minimums; everything else scrolls.
"""

from __future__ import annotations

from krita import DockWidget, Krita

from .krita_host import KritaHost
from .panel import GanvasPanel
from .qt import QFrame, QScrollArea, Qt
from .settings import Settings

DOCKER_ID = "ganvasDocker"
TITLE = "ganvas"


class GanvasDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle(TITLE)
        app = Krita.instance()
        self.panel = GanvasPanel(Settings.krita(), KritaHost(app))
        scroll = QScrollArea()
        scroll.setObjectName("ganvasScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.panel)
        scroll.setMinimumHeight(self.panel.essentials_height())
        self.panel.minimum_listener = scroll.setMinimumHeight  # Krita's style and font arrive later
        self.setWidget(scroll)
        app.notifier().applicationClosing.connect(self.panel.shutdown)  # cancels calls in flight, if still alive

    def canvasChanged(self, canvas):  # required by DockWidget; insertion looks up the active document itself
        pass
