"""Test-only pykrita plugin: drives the ganvas docker through its widgets, then quits Krita.

tests/krita_bridge/test_krita_e2e.py installs it beside the real plugin in a throwaway Krita profile and passes a
JSON config in GANVAS_AUTOTEST_CONFIG. It runs a list of steps on a timer (never blocking Krita's
event loop, which the docker's network answers and image work need), writes a JSON report after
every step, and quits. Any Python exception inside Krita (an unhandled one via sys.excepthook, or one
the docker's guard caught) writes {"ok": false, ...} at once and exits, so the test fails fast.

The docker stays where Krita put it on this fresh profile (the window is maximised to the screen);
the driver measures what a painter would see there. Insertions are timed with a heartbeat timer: the
longest gap between its 5 ms ticks is the longest time Krita's UI thread was blocked.

With "tolerant": true in the config, widgets the docker lacks are skipped instead of failing the run
(for measuring an older version of the plugin).
"""

import json
import os
import re
import sys
import time
import traceback

import krita
from krita import Extension, Krita, Selection
from PyQt5.QtCore import QPoint, QRect, QTimer
from PyQt5.QtGui import QCursor, QImage
from PyQt5.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QWidget,
)

CONFIG = json.loads(os.environ.get("GANVAS_AUTOTEST_CONFIG") or "{}")
REPORT = {"ok": None, "steps": [], "started": time.time()}
KEY_WIDGETS = (
    "ganvasStatus",
    "ganvasStartServer",
    "ganvasPrompt",
    "ganvasGenerate",
    "ganvasMessage",
    "ganvasResults",
    "ganvasInsertLayer",
    "ganvasInsertSelection",
    "ganvasFit",
    "ganvasScaling",
)


def write_report():
    path = CONFIG.get("report")
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(REPORT, fh, indent=2)
    os.replace(tmp, path)


def fail(message, details=""):
    if REPORT["ok"] is False:
        return
    REPORT.update(ok=False, error=message, details=details)
    try:
        REPORT["docker"] = Driver.instance.snapshot() if Driver.instance else None
    except Exception:
        pass
    write_report()
    sys.stderr.write(f"ganvas autotest FAILED: {message}\n{details}\n")
    sys.stderr.flush()
    os._exit(3)  # no dialogs, no waiting: the test sees the report at once


def excepthook(kind, value, tb):
    fail(
        f"unhandled Python exception in Krita: {kind.__name__}: {value}",
        "".join(traceback.format_exception(kind, value, tb)),
    )


class Heartbeat:
    """A 5 ms timer on Krita's UI thread; the longest gap between ticks is the longest UI block."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self.tick)
        self.last = None
        self.max_gap = 0.0

    def start(self):
        self.last, self.max_gap = time.perf_counter(), 0.0
        self.timer.start()

    def tick(self):
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def stop(self) -> float:
        self.tick()
        self.timer.stop()
        return self.max_gap


class KritaAddTimer:
    """Time spent inside Krita's Node.addChildNode (it waits for the image to recompose), so an insertion's
    time on the UI thread splits into Krita's part and the docker's own part."""

    total = 0.0

    @classmethod
    def install(cls):
        original = krita.Node.addChildNode

        def timed(node, child, above):
            started = time.perf_counter()
            try:
                return original(node, child, above)
            finally:
                cls.total += time.perf_counter() - started

        krita.Node.addChildNode = timed


class Driver:
    instance = None

    def __init__(self):
        Driver.instance = self
        self.app = Krita.instance()
        self.docker = None
        self.doc = None
        self.heartbeat = Heartbeat()
        insertions = [("insert " + spec["name"], 120, self.make_insert(spec)) for spec in CONFIG.get("inserts", [])]
        self.steps = [
            ("find docker", 60, self.find_docker),
            ("layout", 30, self.layout),
            ("offline", 60, self.offline),
            ("command not found", 30, self.command_not_found),
            ("create document", 60, self.create_document),
            ("start local server", 30, self.start_server),
            ("wait ready", 180, self.wait_ready),
            ("typed seed", 30, self.typed_seed),
            ("wait results", 60, self.wait_results),
            *insertions,
            ("refused prompt", 30, self.refused_prompt),
            ("wait refused", 30, self.wait_refused),
            ("live mode", 120, self.live_mode),
            ("screenshot", 30, self.screenshot),
            ("quit", 30, self.quit),
        ]
        self.index = 0
        self.step_started = time.monotonic()
        self.step_state = {}
        self.timer = QTimer()
        self.timer.timeout.connect(self.tick)
        self.timer.start(100)

    # --- plumbing ---------------------------------------------------------------------------------------
    def w(self, cls, name, required=True):
        widget = self.docker.findChild(cls, name)
        if widget is None and required and not CONFIG.get("tolerant"):
            fail(f"the docker has no {cls.__name__} named {name!r}")
        return widget

    def text(self, name):
        return self.w(QLabel, name).text()

    def snapshot(self):
        if self.docker is None:
            return None
        return {
            name: self.docker.findChild(QLabel, name).text()
            for name in ("ganvasStatus", "ganvasMessage")
            if self.docker.findChild(QLabel, name) is not None
        }

    def tick(self):
        if self.index >= len(self.steps):
            return
        name, limit, step = self.steps[self.index]
        try:
            done = step()
        except Exception as exc:
            fail(f"step {name!r} raised {type(exc).__name__}: {exc}", traceback.format_exc())
            return
        if done:
            REPORT["steps"].append(
                {"step": name, "seconds": round(time.monotonic() - self.step_started, 3), "docker": self.snapshot()}
            )
            write_report()
            self.index += 1
            self.step_started = time.monotonic()
            self.step_state = {}
        elif time.monotonic() - self.step_started > limit:
            fail(f"step {name!r} did not finish within {limit} s")

    def panel(self):
        return self.docker.findChild(QWidget, "ganvasPanel")

    def choose(self, name, data):
        combo = self.w(QComboBox, name, required=False)
        if combo is not None:
            combo.setCurrentIndex(combo.findData(data))
        return combo

    # --- steps ------------------------------------------------------------------------------------------
    def find_docker(self):
        for dock in self.app.dockers():
            if dock.objectName() == "ganvasDocker":
                self.docker = dock
                from ganvas_krita import guard  # the plugin's own module: its errors fail the test

                guard.listeners.append(lambda exc, text: fail(f"error inside the ganvas docker: {exc!r}", text))
                KritaAddTimer.install()
                self.finish_s = 0.0
                host = getattr(self.panel(), "host", None)
                if hasattr(host, "finish_insert"):  # the UI-thread half of an insertion, after the worker's
                    finish = host.finish_insert

                    def timed_finish(*args):
                        started = time.perf_counter()
                        try:
                            return finish(*args)
                        finally:
                            self.finish_s += time.perf_counter() - started

                    host.finish_insert = timed_finish
                main = self.app.activeWindow().qwindow()
                main.showMaximized()  # no window manager under Xvfb: also set the screen's geometry
                main.setGeometry(QApplication.primaryScreen().availableGeometry())
                REPORT["dockers"] = len([d for d in self.app.dockers() if d.objectName() == "ganvasDocker"])
                self.inject(CONFIG.get("inject"))
                return True
        return False

    def inject(self, kind):
        """Test the test: a deliberate bug must end the run at once with the error in the report."""
        if kind == "slot":  # an unhandled exception in a Qt slot reaches sys.excepthook
            QTimer.singleShot(0, lambda: 1 / 0)
        elif kind == "docker":  # a bug inside the docker is caught by its guard, which tells the listeners
            panel = self.panel()
            QTimer.singleShot(0, lambda: panel._task_finished(object()))
        if kind:
            self.steps.insert(self.index + 1, ("wait for the injected error", 30, lambda: False))

    def layout(self):
        """Where Krita put the docker on this fresh profile, and what of it a painter sees there."""
        if "since" not in self.step_state:
            self.step_state["since"] = time.monotonic()
        if time.monotonic() - self.step_state["since"] < 2.0:  # let the dock layout settle
            return False
        main = self.app.activeWindow().qwindow()
        scroll = self.docker.findChild(QScrollArea, "ganvasScroll")
        viewport = scroll.viewport() if scroll is not None else self.docker
        visible = {}
        for name in KEY_WIDGETS:
            widget = self.docker.findChild(QWidget, name)
            if widget is None or not widget.isVisibleTo(self.docker):
                visible[name] = None
                continue
            rect = QRect(widget.mapTo(viewport, QPoint(0, 0)), widget.size())
            seen = rect.intersected(viewport.rect())
            visible[name] = round(seen.width() * seen.height() / max(1, rect.width() * rect.height()), 3)
        REPORT["layout"] = {
            "window": list(main.geometry().getRect()),
            "screen": list(QApplication.primaryScreen().geometry().getRect()),
            "docker": list(self.docker.geometry().getRect()),
            "area": int(main.dockWidgetArea(self.docker)),
            "floating": self.docker.isFloating(),
            "visible": visible,
            "others": {
                d.objectName(): list(d.geometry().getRect())
                for d in self.app.dockers()
                if d.isVisible()
                and not d.isFloating()
                and d.objectName() != "ganvasDocker"
                and int(main.dockWidgetArea(d)) == int(main.dockWidgetArea(self.docker))
            },
        }
        main.grab().save(os.path.join(CONFIG["out_dir"], "fresh.png"))
        return True

    def offline(self):
        """Nothing answers at the URL yet: what the docker says before anyone presses anything."""
        status = self.text("ganvasStatus")
        if not status.startswith("offline"):
            return False
        generate = self.w(QPushButton, "ganvasGenerate")
        start = self.w(QPushButton, "ganvasStartServer")
        REPORT["offline"] = {
            "status": status,
            "message": self.text("ganvasMessage"),
            "generate_enabled": generate.isEnabled(),
            "generate_tooltip": generate.toolTip(),
            "start_visible": start.isVisible(),
            "start_text": start.text(),
        }
        return True

    def command_not_found(self):
        """Start local server with a command Krita cannot find (e.g. ganvas from a venv not on Krita's PATH)."""
        command = self.w(QLineEdit, "ganvasServerCommand")
        REPORT["recorded_command"] = command.text()
        command.setText(CONFIG["missing_command"])
        self.w(QPushButton, "ganvasStartServer").click()
        REPORT["not_found_message"] = self.text("ganvasMessage")
        section = self.docker.findChild(QWidget, "ganvasServerCommand")
        REPORT["server_field_shown"] = section.isVisibleTo(self.docker)
        command.setText(REPORT["recorded_command"])  # setText: not a user edit, nothing stored
        toggle = self.w(QToolButton, "ganvasServerToggle", required=False)
        if toggle is not None:
            toggle.setChecked(False)
        return True

    def create_document(self):
        if self.doc is None:
            width, height = CONFIG["doc_size"]
            self.doc = self.app.createDocument(width, height, "ganvas-e2e", "RGBA", "U8", "", 72.0)
            self.app.activeWindow().addView(self.doc)
        return self.app.activeDocument() is not None and self.app.activeDocument().name() == "ganvas-e2e"

    def start_server(self):
        url = self.w(QLineEdit, "ganvasServerUrl")
        url.setText(CONFIG["server_url"])
        url.editingFinished.emit()
        if "server_command" in CONFIG:  # only for a docker that cannot find its own command (the old version)
            self.w(QLineEdit, "ganvasServerCommand").setText(CONFIG["server_command"])
        self.w(QPushButton, "ganvasStartServer").click()
        REPORT["start_message"] = self.text("ganvasMessage")
        return True

    def wait_ready(self):
        REPORT["local_server_pid"] = _local_server_pid()  # so the test can clean up if Krita dies
        return self.text("ganvasStatus").startswith("ready")

    def typed_seed(self):
        """Type a seed (unlocked, as on a fresh profile) and press Enter in the prompt."""
        lock = self.w(QToolButton, "ganvasSeedLock")
        REPORT["seed_locked_at_start"] = lock.isChecked()
        if lock.isChecked():
            lock.click()
        self.w(QSpinBox, "ganvasCount").setValue(CONFIG["count"])
        seed = self.w(QLineEdit, "ganvasSeed")
        seed.setText(str(CONFIG["seed"]))
        seed.editingFinished.emit()
        prompt = self.w(QLineEdit, "ganvasPrompt")
        prompt.setText(CONFIG["prompt"])
        prompt.returnPressed.emit()
        return True

    def wait_results(self):
        results = self.w(QListWidget, "ganvasResults")
        message = self.text("ganvasMessage")
        if message.startswith(("invalid", "refused", "error", "timeout", "server")):
            fail(f"generation failed: {message}")
        if results.count() == CONFIG["count"] and not message.startswith("generating"):
            REPORT["generated"] = message
            # The Size box follows the canvas (an upsampled size on a large one): the test's reference
            # images must be made at the same size.
            REPORT["size"] = int(self.w(QComboBox, "ganvasSize").currentData() or 0)
            REPORT["result_seeds"] = [results.item(i).text() for i in range(results.count())]
            REPORT["seed_field_after"] = self.w(QLineEdit, "ganvasSeed").text()
            return True
        return False

    def make_insert(self, spec):
        """Choose a result, Fit and Scaling, press an Insert button; wait for the new layer; time the UI."""

        def step():
            state = self.step_state
            if "before" not in state:
                if spec.get("selection"):
                    sel = Selection()
                    sel.select(*spec["selection"], 255)
                    self.doc.setSelection(sel)
                else:
                    self.doc.setSelection(Selection())
                self.w(QListWidget, "ganvasResults").setCurrentRow(spec["row"])
                self.choose("ganvasFit", spec.get("fit"))
                self.choose("ganvasScaling", spec.get("scaling"))
                self.doc.waitForDone()
                state["before"] = {n.uniqueId().toString() for n in self.doc.topLevelNodes()}
                KritaAddTimer.total, self.finish_s = 0.0, 0.0
                self.heartbeat.start()
                started = time.perf_counter()
                self.w(QPushButton, spec["button"]).click()
                state["click_s"] = time.perf_counter() - started
                state["started"] = started
                return False
            panel = self.panel()
            message = self.text("ganvasMessage")
            if getattr(panel, "inserting", False) or message.startswith("inserting"):
                return False
            new = [n for n in self.doc.topLevelNodes() if n.uniqueId().toString() not in state["before"]]
            if not new:
                fail(f"{spec['button']} added no layer; message: {message}")
            state["done_s"] = time.perf_counter() - state["started"]
            state["gap_s"] = self.heartbeat.stop()
            self.doc.waitForDone()
            node = new[0]
            rect = node.bounds()  # the exact bounds: fully transparent margins (RGBA models) do not count
            bounds = [rect.x(), rect.y(), rect.width(), rect.height()]
            placed = re.search(r"\((\d+)x(\d+) at (-?\d+),(-?\d+)\)", message)  # where the docker put it
            x, y, w, h = [int(placed[3]), int(placed[4]), int(placed[1]), int(placed[2])] if placed else bounds
            path = os.path.join(CONFIG["out_dir"], f"{spec['name']}.png")
            QImage(bytes(node.pixelData(x, y, w, h)), w, h, w * 4, QImage.Format.Format_ARGB32).copy().save(path)
            REPORT.setdefault("layers", {})[spec["name"]] = {
                "name": node.name(),
                "id": node.uniqueId().toString(),
                "bounds": bounds,
                "placed": [x, y, w, h],
                "png": path,
                "message": message,
                "click_s": round(state["click_s"], 4),
                "until_layer_s": round(state["done_s"], 4),
                "max_ui_block_s": round(state["gap_s"], 4),
                "active": self.doc.activeNode().name(),
                # UI-thread time: the click's slot plus the finishing step; Krita's addChildNode is part of it
                "ui_thread_s": round(state["click_s"] + self.finish_s, 4),
                "krita_add_s": round(KritaAddTimer.total, 4),
                "docker_ui_s": round(state["click_s"] + self.finish_s - KritaAddTimer.total, 4),
                "host_timings": {
                    k: round(v, 4) for k, v in getattr(getattr(panel, "host", None), "timings", {}).items()
                },
            }
            return True

        return step

    def refused_prompt(self):
        self.doc.setSelection(Selection())
        self.w(QLineEdit, "ganvasPrompt").setText("x" * 1500)
        self.w(QPushButton, "ganvasGenerate").click()
        return True

    def wait_refused(self):
        message = self.text("ganvasMessage")
        if message.startswith("invalid"):
            REPORT["refused_message"] = message
            return True
        return False

    def live_mode(self):
        """Live mode with two prompts, typed keystroke by keystroke: both batches stay in the History."""
        state = self.step_state
        history = self.w(QComboBox, "ganvasHistory")
        prompts = CONFIG["live_prompts"]
        if "typed" not in state:
            REPORT["history_before_live"] = history.count()
            live = self.w(QCheckBox, "ganvasLive")
            if not live.isChecked():
                live.click()
            state["typed"] = 0
        typed = state["typed"]
        if typed and not any(prompts[typed - 1][:20] in history.itemText(i) for i in range(history.count())):
            return False  # the previous prompt's live batch has not arrived yet
        if typed == len(prompts):
            REPORT["live_history"] = [history.itemText(i) for i in range(history.count())]
            self.w(QCheckBox, "ganvasLive").click()
            return True
        prompt = self.w(QLineEdit, "ganvasPrompt")
        prompt.clear()
        for i in range(1, len(prompts[typed]) + 1):  # keystroke by keystroke: the debounce collapses them
            prompt.setText(prompts[typed][:i])
        state["typed"] = typed + 1
        return False

    def screenshot(self):
        if not self.step_state.get("waited"):
            self.w(QLineEdit, "ganvasPrompt").setText(CONFIG["prompt"])
            history = self.w(QComboBox, "ganvasHistory")  # bring the first batch back from the history
            history.setCurrentIndex(history.count() - 1)
            history.activated.emit(history.count() - 1)
            results = self.w(QListWidget, "ganvasResults")
            results.setCurrentRow(0)
            REPORT["restored"] = [results.item(i).toolTip() for i in range(results.count())]
            shown = CONFIG.get("screenshot_layer")  # one inserted layer on the canvas, for a readable picture
            if shown:
                for node in self.doc.topLevelNodes():
                    if node.name().startswith("ganvas:"):
                        node.setVisible(node.uniqueId().toString() == REPORT["layers"][shown]["id"])
                self.doc.refreshProjection()
            self.app.action("zoom_to_fit") and self.app.action("zoom_to_fit").trigger()
            self.step_state["waited"] = time.monotonic()
            return False
        if time.monotonic() - self.step_state["waited"] < 1.5:  # let the canvas repaint
            return False
        tool = self.app.action("KisToolSelectRectangular")  # no brush outline drawn on the canvas
        if tool is not None:
            tool.trigger()
        QCursor.setPos(self.docker.mapToGlobal(self.docker.rect().center()))
        self.docker.grab().save(os.path.join(CONFIG["out_dir"], "docker.png"))
        self.app.activeWindow().qwindow().grab().save(os.path.join(CONFIG["out_dir"], "window.png"))
        REPORT["nodes"] = [n.name() for n in self.doc.topLevelNodes()]
        REPORT["active_at_end"] = self.doc.activeNode().name()
        REPORT["local_server_pid"] = _local_server_pid()
        return True

    def quit(self):
        REPORT["ok"] = True
        write_report()
        self.doc.setModified(False)
        self.doc.close()
        self.timer.stop()
        self.app.action("file_quit").trigger()
        return True


def _local_server_pid():
    from ganvas_krita.local_server import SHARED

    return SHARED.process.pid if SHARED.process is not None else None


class Autotest(Extension):
    def setup(self):
        sys.excepthook = excepthook
        if not CONFIG:
            return
        self.driver = None
        write_report()  # tells the test that Krita's Python and this plugin loaded
        Krita.instance().notifier().windowCreated.connect(self.start)

    def start(self):
        if self.driver is None:
            self.driver = Driver()

    def createActions(self, window):
        pass


Krita.instance().addExtension(Autotest(Krita.instance()))
