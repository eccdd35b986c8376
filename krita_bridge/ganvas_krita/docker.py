"""The Krita docker: a DockWidget holding the panel, wired to Krita's application signals."""
from __future__ import annotations

from krita import DockWidget, Krita

from .krita_host import KritaHost
from .panel import GanvasPanel
from .qt import QScrollArea, QFrame
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
        scroll.setWidget(self.panel)
        self.setWidget(scroll)
        app.notifier().applicationClosing.connect(self.panel.shutdown)  # cancels calls in flight, if still alive

    def canvasChanged(self, canvas):  # required by DockWidget; insertion looks up the active document itself
        pass
