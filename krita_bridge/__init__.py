"""The Krita adapter: a pykrita plugin (`ganvas_krita/` + `ganvas_krita.desktop`) and its installer.

The plugin runs inside Krita's own Python (standard library + PyQt, no numpy or torch) and talks to
`ganvas serve` over HTTP. This package only locates its files; importing it needs neither Krita nor
torch. `ganvas krita install` (command.py, the installer in install.py) copies them into Krita's resources folder.
"""

from pathlib import Path

PLUGIN_MODULE = "ganvas_krita"  # Krita's X-KDE-Library, the pykrita folder and the kritarc key
ENABLE_KEY = f"enable_{PLUGIN_MODULE}"  # [python] enable_ganvas_krita=true in kritarc
HERE = Path(__file__).resolve().parent


def plugin_dir() -> Path:
    return HERE / PLUGIN_MODULE


def desktop_file() -> Path:
    return HERE / f"{PLUGIN_MODULE}.desktop"
