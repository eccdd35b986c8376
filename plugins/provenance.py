"""Marks every image as AI-generated: IPTC DigitalSourceType `trainedAlgorithmicMedia` in XMP.

The XMP packet goes into an iTXt chunk with the keyword "XML:com.adobe.xmp" (XMP spec part 3), where
Adobe tools, exiftool and content-credential checkers look for it. On by default; disable with
GANVAS_DISABLE_PLUGINS=provenance.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from ganvas import __version__
from ganvas.core.hookspecs import hookimpl
from ganvas.core.io.png import XMP_KEY

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"


def xmp_packet(creator_tool: str) -> str:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{IPTC_EXT_NS}"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"\n'
        f'    xmp:CreatorTool={quoteattr(creator_tool)}/>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="w"?>'
    )


@hookimpl(trylast=True)
def ganvas_image_metadata(request, result, index):
    return {XMP_KEY: xmp_packet(f"ganvas {__version__} ({result.model.name})")}
