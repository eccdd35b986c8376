"""ganvas for Krita: a docker that generates images from a prompt through `ganvas serve`.

Krita imports this package at start when the plugin is enabled (Settings > Configure Krita > Python
Plugin Manager, or `enable_ganvas_krita=true` under [python] in kritarc). Outside Krita (tests,
`ganvas krita install`) it imports without registering anything, so its modules stay usable there.
Standard library + PyQt only: Krita's Python has no numpy or torch.
"""

__version__ = "0.2.0"

try:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita
except ImportError:  # not inside Krita
    Krita = None


def _stop_local_server(*_):
    from .guard import report
    from .local_server import SHARED

    try:
        SHARED.stop()
    except Exception as exc:  # Krita is closing: log it, never raise into Qt
        report(exc)


if Krita is not None:
    import atexit

    from .docker import DOCKER_ID, GanvasDocker

    _positions = getattr(DockWidgetFactoryBase, "DockPosition", DockWidgetFactoryBase)  # scoped enum (PyQt6)
    Krita.instance().addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, _positions.DockRight, GanvasDocker))
    # Module-level, not on a docker: Krita deletes the dockers (and their Qt connections) before it quits.
    Krita.instance().notifier().applicationClosing.connect(_stop_local_server)
    atexit.register(_stop_local_server)
