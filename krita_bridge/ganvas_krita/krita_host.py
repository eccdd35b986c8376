"""What the docker does to Krita's document: insert a result as a layer, or into the selection.

The panel only talks to a host object with these three methods, so the panel can also run (and be
tested) outside Krita with another host.
"""
from __future__ import annotations

from . import canvas
from .canvas import CanvasError
from .qt import QByteArray

RGBA8_PROFILE = "sRGB-elle-V2-srgbtrc.icc"


class KritaHost:
    def __init__(self, app=None):
        if app is None:
            from krita import Krita

            app = Krita.instance()
        self.app = app

    def _document(self):
        doc = self.app.activeDocument()
        if doc is None:
            raise CanvasError("no document is open: create or open one first")
        return doc

    def has_document(self) -> bool:
        return self.app.activeDocument() is not None

    def _add_layer(self, doc, name: str, image, x: int, y: int):
        node = doc.createNode(name, "paintlayer")
        active = doc.activeNode()
        parent = active.parentNode() if active is not None else None
        if parent is None:
            parent, active = doc.rootNode(), None
        parent.addChildNode(node, active)  # just above the active layer, like Krita's own "new layer"
        if (doc.colorModel(), doc.colorDepth()) != ("RGBA", "U8"):
            node.setColorSpace("RGBA", "U8", RGBA8_PROFILE)  # the layer holds the image exactly; Krita converts on display
        node.setPixelData(QByteArray(canvas.bgra_bytes(image)), x, y, image.width(), image.height())
        doc.setActiveNode(node)
        doc.refreshProjection()
        return node

    def insert_layer(self, png: bytes, name: str) -> str:
        """The image at its own size, centred on the canvas, as a new paint layer."""
        doc = self._document()
        image = canvas.decode_png(png)
        x, y = canvas.centred(doc.width(), doc.height(), image.width(), image.height())
        self._add_layer(doc, name, image, x, y)
        return f"inserted layer \u201c{name}\u201d ({image.width()}x{image.height()} at {x},{y})"

    def insert_into_selection(self, png: bytes, name: str) -> str:
        """The image scaled to the selection's bounds and cut to its shape, as a new paint layer."""
        doc = self._document()
        selection = doc.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            raise CanvasError("nothing is selected: select an area first (or use Insert as layer)")
        x, y, w, h = selection.x(), selection.y(), selection.width(), selection.height()
        image = canvas.fit(canvas.decode_png(png), w, h)
        image = canvas.apply_mask(image, bytes(selection.pixelData(x, y, w, h)))
        self._add_layer(doc, name, image, x, y)
        return f"inserted layer \u201c{name}\u201d into the selection ({w}x{h} at {x},{y})"
