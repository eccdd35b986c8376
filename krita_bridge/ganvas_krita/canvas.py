"""Image work between the server's PNGs and Krita's pixel buffers, in Qt only (no Krita API here).

Krita's 8-bit RGBA layers store pixels as B, G, R, A bytes, unpremultiplied: exactly QImage's
Format_ARGB32 on a little-endian machine, so a PNG decoded to that format is copied byte for byte,
alpha included (the server's RGBA PNGs carry straight alpha).

`render` does everything an insertion needs to the pixels (decode, scale, crop, cut to the selection's
mask, pack into Krita's byte order). It touches QImage/QPainter only, which Qt allows on any thread,
so the docker runs it on a worker thread and calls Krita's API on the UI thread with the result.
PyQt5 keeps Python's lock during each Qt call, and Krita's UI thread needs that lock for every event
that reaches a Python widget (the docker itself), so `render` works in strips of about STRIP_PIXELS
pixels: no single call holds the lock for more than a few milliseconds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .qt import QByteArray, QImage, QPainter, QRectF, Qt, image_bytes

FITS = ("inside", "fill", "actual")  # fit inside (letterbox), fill and crop, the image's own size
SCALINGS = ("smooth", "pixel")  # smooth (bilinear) or nearest-neighbour ("pixel art")
STRIP_PIXELS = 1 << 19  # output pixels per Qt call while rendering (see the module docstring)


class CanvasError(Exception):
    """Something the painter can fix (no document, no selection), said in one line."""


def decode_png(png: bytes) -> QImage:
    image = QImage.fromData(png, "PNG")
    if image.isNull():
        raise CanvasError("the server's image could not be decoded as PNG")
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def bgra_bytes(image: QImage) -> bytes:
    """Pixels in Krita's RGBA/U8 byte order, rows packed (width * 4 bytes each)."""
    if sys.byteorder != "little":  # ARGB32 is a 32-bit word; on big-endian machines its bytes are A, R, G, B
        image = image.convertToFormat(QImage.Format.Format_RGBA8888).rgbSwapped()
    else:
        image = image.convertToFormat(QImage.Format.Format_ARGB32)
    return image_bytes(image)


@dataclass(frozen=True)
class Placement:
    """Where an image goes: scale it to scaled_w x scaled_h, take the w x h window at (crop_x, crop_y)
    of the scaled image, and put that window at (x, y) in the document."""

    scaled_w: int
    scaled_h: int
    x: int
    y: int
    w: int
    h: int
    crop_x: int = 0
    crop_y: int = 0


def place(src_w: int, src_h: int, area: tuple[int, int, int, int], fit: str, clip: bool = False) -> Placement:
    """Fit a src_w x src_h image to `area` (x, y, w, h: the canvas or the selection's bounds), keeping its
    aspect ratio. `clip` crops whatever falls outside the area (a selection); without it an actual-size
    image larger than the canvas is kept whole, centred, as Krita keeps layers larger than the canvas."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    ax, ay, aw, ah = area
    if src_w <= 0 or src_h <= 0 or aw <= 0 or ah <= 0:
        raise CanvasError(f"nothing to fit: a {src_w}x{src_h} image into a {aw}x{ah} area")
    if fit == "actual":
        sw, sh = src_w, src_h
    else:
        scale = (min if fit == "inside" else max)(aw / src_w, ah / src_h)
        sw, sh = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        if fit == "inside":
            sw, sh = min(sw, aw), min(sh, ah)  # rounding never spills out of the area
        else:
            sw, sh = max(sw, aw), max(sh, ah)  # nor leaves a gap
    x, y = ax + (aw - sw) // 2, ay + (ah - sh) // 2
    if fit == "fill" or (clip and (sw > aw or sh > ah)):
        w, h = min(sw, aw), min(sh, ah)
        crop_x, crop_y = max(0, (sw - aw) // 2), max(0, (sh - ah) // 2)
        return Placement(sw, sh, max(x, ax), max(y, ay), w, h, crop_x, crop_y)
    return Placement(sw, sh, x, y, sw, sh)


def scale(image: QImage, width: int, height: int, scaling: str = "smooth") -> QImage:
    """Exactly width x height; smooth, or nearest-neighbour for pixel art. Straight alpha in, straight out
    (Qt scales smoothly in premultiplied form, so transparent pixels do not bleed their colour)."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if (image.width(), image.height()) == (width, height):
        return image
    mode = (
        Qt.TransformationMode.FastTransformation if scaling == "pixel" else Qt.TransformationMode.SmoothTransformation
    )
    return image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio, mode).convertToFormat(
        QImage.Format.Format_ARGB32
    )


def fit(image: QImage, width: int, height: int) -> QImage:
    """Stretch to exactly width x height, smoothly (kept for scripts; insertion keeps the aspect ratio)."""
    return scale(image, width, height, "smooth")


def apply_mask(image: QImage, mask: bytes) -> QImage:
    """Multiply alpha by an 8-bit selection mask (one byte per pixel, Krita's Selection.pixelData)."""
    width, height = image.width(), image.height()
    if len(mask) != width * height:
        raise CanvasError(f"selection mask has {len(mask)} bytes for a {width}x{height} area")
    if mask.count(255) == len(mask):  # a plain rectangle: nothing to cut, keep the pixels exact
        return image
    alpha = QImage(mask, width, height, width, QImage.Format.Format_Alpha8).copy()
    out = image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(out)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_DestinationIn)
    painter.drawImage(0, 0, alpha)
    painter.end()
    return out.convertToFormat(QImage.Format.Format_ARGB32)


def crop_mask(mask: bytes, mask_w: int, x: int, y: int, w: int, h: int) -> bytes:
    """The w x h window at (x, y) of a mask_w-wide 8-bit mask."""
    if (x, w) == (0, mask_w):
        return mask[y * mask_w : (y + h) * mask_w]
    return b"".join(mask[row * mask_w + x : row * mask_w + x + w] for row in range(y, y + h))


@dataclass
class RenderRequest:
    """Everything `render` needs, gathered on the UI thread (Krita's API) before the worker starts."""

    png: bytes
    area: tuple[int, int, int, int]  # canvas (0, 0, w, h) or the selection's bounds
    fit: str = "inside"
    scaling: str = "smooth"
    mask: bytes | None = None  # the selection over `area`, one byte per pixel
    clip: bool = False  # crop to `area` (a selection)


@dataclass
class Rendered:
    pixels: QByteArray  # B, G, R, A rows for Node.setPixelData, made on the worker thread
    x: int
    y: int
    w: int
    h: int
    source_size: tuple[int, int]

    @property
    def data(self) -> bytes:
        return bytes(self.pixels)


def render(request: RenderRequest) -> Rendered:
    """Decode, scale, crop and mask one result for insertion. Qt image work only: safe on a worker thread."""
    image = decode_png(request.png)
    spot = place(image.width(), image.height(), request.area, request.fit, clip=request.clip)
    strips = _Strips(image, spot, request.scaling)
    ax, ay, aw, _ = request.area
    rows = max(1, STRIP_PIXELS // spot.w)
    pixels = QByteArray()  # what Krita's API takes, filled strip by strip (short Qt calls: see the docstring)
    pixels.reserve(spot.w * spot.h * 4)
    for top in range(0, spot.h, rows):
        count = min(rows, spot.h - top)
        strip = strips.rows(top, count)
        if request.mask is not None:
            strip = apply_mask(strip, crop_mask(request.mask, aw, spot.x - ax, spot.y - ay + top, spot.w, count))
        pixels.append(bgra_bytes(strip))
    return Rendered(pixels, spot.x, spot.y, spot.w, spot.h, (image.width(), image.height()))


class _Strips:
    """Rows of the placed image (the w x h window of the scaled image), made a strip at a time."""

    def __init__(self, image: QImage, spot: Placement, scaling: str):
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.image, self.spot, self.scaling = image, spot, scaling
        src_w, src_h = image.width(), image.height()
        self.same = (spot.scaled_w, spot.scaled_h) == (src_w, src_h)
        self.shrinks = spot.scaled_w < src_w or spot.scaled_h < src_h
        self.whole = None
        if not self.same and scaling == "smooth" and self.shrinks:
            # Downscaling wants Qt's area-averaging scaler; the result is at most the source's size.
            self.whole = scale(image, spot.scaled_w, spot.scaled_h, "smooth")
        elif not self.same and scaling == "smooth":
            self.premultiplied = image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        elif not self.same:
            self.source_rows = []
            data, stride = image_bytes(image), src_w * 4
            # nearest neighbour: output pixel i samples source pixel floor((i + 0.5) * src / out)
            xs = [min(src_w - 1, int((spot.crop_x + i + 0.5) * src_w / spot.scaled_w)) for i in range(spot.w)]
            for row in range(src_h):
                line = data[row * stride : (row + 1) * stride]
                self.source_rows.append(b"".join(line[x * 4 : x * 4 + 4] for x in xs))

    def rows(self, top: int, count: int) -> QImage:
        spot = self.spot
        y0 = spot.crop_y + top
        if self.same:
            return self.image.copy(spot.crop_x, y0, spot.w, count)
        if self.whole is not None:
            return self.whole.copy(spot.crop_x, y0, spot.w, count)
        if self.scaling == "pixel":
            src_h = self.image.height()
            data = b"".join(
                self.source_rows[min(src_h - 1, int((y + 0.5) * src_h / spot.scaled_h))] for y in range(y0, y0 + count)
            )
            return QImage(data, spot.w, count, spot.w * 4, QImage.Format.Format_ARGB32).copy()
        strip = QImage(spot.w, count, QImage.Format.Format_ARGB32_Premultiplied)
        strip.fill(0)
        painter = QPainter(strip)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(QRectF(-spot.crop_x, -y0, spot.scaled_w, spot.scaled_h), self.premultiplied)
        painter.end()
        return strip.convertToFormat(QImage.Format.Format_ARGB32)


def centred(outer_w: int, outer_h: int, width: int, height: int) -> tuple[int, int]:
    return (outer_w - width) // 2, (outer_h - height) // 2


def thumbnail(image: QImage, side: int) -> QImage:
    """Icon for the results strip: nearest-neighbour when enlarging, so small images stay crisp."""
    mode = (
        Qt.TransformationMode.FastTransformation
        if max(image.width(), image.height()) < side
        else Qt.TransformationMode.SmoothTransformation
    )
    return image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, mode)
