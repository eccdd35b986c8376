"""Image work between the server's PNGs and Krita's pixel buffers, in Qt only (no Krita API here).

Krita's 8-bit RGBA layers store pixels as B, G, R, A bytes, unpremultiplied: exactly QImage's
Format_ARGB32 on a little-endian machine, so a PNG decoded to that format is copied byte for byte.
"""
from __future__ import annotations

import sys

from .qt import QImage, QPainter, Qt, image_bytes


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


def fit(image: QImage, width: int, height: int) -> QImage:
    """Scale to exactly width x height (the selection's bounds); smooth, as painters expect."""
    if (image.width(), image.height()) == (width, height):
        return image
    return image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio,
                        Qt.TransformationMode.SmoothTransformation).convertToFormat(QImage.Format.Format_ARGB32)


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


def centred(outer_w: int, outer_h: int, width: int, height: int) -> tuple[int, int]:
    return (outer_w - width) // 2, (outer_h - height) // 2


def thumbnail(image: QImage, side: int) -> QImage:
    """Icon for the results strip: nearest-neighbour when enlarging, so small images stay crisp."""
    mode = (Qt.TransformationMode.FastTransformation if max(image.width(), image.height()) < side
            else Qt.TransformationMode.SmoothTransformation)
    return image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, mode)
