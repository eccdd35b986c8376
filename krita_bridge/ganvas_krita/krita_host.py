"""What the docker does to Krita's document: insert a result as a layer, or into the selection.

An insertion has three steps so that Krita's UI never waits on image work:
1. `prepare_insert` (UI thread, Krita's API): the active document, the area (canvas or selection) and
   the selection's mask, as a canvas.RenderRequest;
2. canvas.render (a worker thread, QImage only): decode, scale, crop, mask;
3. `finish_insert` (UI thread, Krita's API): a new paint layer with those pixels.

The panel only talks to a host object with these methods, so the panel can also run (and be tested)
outside Krita with another host.

Layers are filled before they are added to the image (writing into a layer that is already part of
the image costs a second recomposition), and Krita activates a newly added layer by itself once its
layer-box entry exists: calling Document.setActiveNode right after Node.addChildNode ran before that
entry existed and made Krita 5.1 log `SAFE ASSERT "shape" in kis_node_manager.cpp, line 165` on
every insertion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .canvas import CanvasError, Rendered, RenderRequest

RGBA8_PROFILE = "sRGB-elle-V2-srgbtrc.icc"


@dataclass
class InsertJob:
    """An insertion between its steps: what to render, and where the result goes."""

    request: RenderRequest
    name: str
    target: str  # "canvas" or "selection"
    document: object = None


class KritaHost:
    def __init__(self, app=None):
        if app is None:
            from krita import Krita

            app = Krita.instance()
        self.app = app
        self.timings: dict[str, float] = {}  # seconds on the UI thread per step of the last insertion

    def _document(self):
        doc = self.app.activeDocument()
        if doc is None:
            raise CanvasError("no document is open: create or open one first")
        return doc

    def has_document(self) -> bool:
        return self.app.activeDocument() is not None

    def canvas_size(self) -> tuple[int, int] | None:
        """(width, height) of the active document in pixels, None when no document is open."""
        doc = self.app.activeDocument()
        return None if doc is None else (int(doc.width()), int(doc.height()))

    # --- step 1: UI thread -------------------------------------------------------------------------------
    def prepare_insert(self, png: bytes, name: str, target: str, fit: str, scaling: str) -> InsertJob:
        doc = self._document()
        if target == "selection":
            selection = doc.selection()
            if selection is None or selection.width() <= 0 or selection.height() <= 0:
                raise CanvasError("nothing is selected: select an area first (or use Insert as layer)")
            area = (selection.x(), selection.y(), selection.width(), selection.height())
            mask = bytes(selection.pixelData(*area))
            request = RenderRequest(png, area, fit, scaling, mask=mask, clip=True)
        else:
            request = RenderRequest(png, (0, 0, doc.width(), doc.height()), fit, scaling)
        return InsertJob(request, name, target, doc)

    # --- step 3: UI thread -------------------------------------------------------------------------------
    def _still_open(self, doc) -> bool:
        return any(doc == other for other in self.app.documents())

    def finish_insert(self, job: InsertJob, rendered: Rendered) -> str:
        doc = job.document
        if doc is None or not self._still_open(doc):
            raise CanvasError("the document was closed before the image was ready; nothing inserted")
        started = time.perf_counter()
        node = doc.createNode(job.name, "paintlayer")
        if (doc.colorModel(), doc.colorDepth()) != ("RGBA", "U8"):
            node.setColorSpace(
                "RGBA", "U8", RGBA8_PROFILE
            )  # the layer holds the image exactly; Krita converts on display
        filled = time.perf_counter()
        node.setPixelData(rendered.pixels, rendered.x, rendered.y, rendered.w, rendered.h)
        added = time.perf_counter()
        active = doc.activeNode()
        parent = active.parentNode() if active is not None else None
        if parent is None:
            parent, active = doc.rootNode(), None
        # Just above the active layer, like Krita's own "new layer"; adding it updates the canvas, and Krita
        # makes it the active layer (see the module docstring: no setActiveNode here).
        parent.addChildNode(node, active)
        done = time.perf_counter()
        self.timings = {"create_node": filled - started, "set_pixels": added - filled, "add_node": done - added}
        where = " into the selection" if job.target == "selection" else ""
        return f"inserted layer \u201c{job.name}\u201d{where} ({rendered.w}x{rendered.h} at {rendered.x},{rendered.y})"
