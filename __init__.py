"""ganvas: a fast text-to-image GAN for the tools artists already use."""

__version__ = "0.2.0"

_LAZY = {
    "Pipeline": "ganvas.core.pipeline",
    "generate": "ganvas.core.pipeline",
    "GenerationRequest": "ganvas.core.requests",
    "GenerationResult": "ganvas.core.requests",
    "RequestRefused": "ganvas.core.requests",
}


def __getattr__(name):
    # Lazy so that `import ganvas` (CLI start, plugin listing, Krita bridge) does not import torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganvas' has no attribute {name!r}")
