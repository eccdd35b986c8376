"""Test-only pykrita plugin: drives the ganvas docker through its widgets, then quits Krita.

tests/test_krita_e2e.py installs it beside the real plugin in a throwaway Krita profile and passes a
JSON config in GANVAS_AUTOTEST_CONFIG. It runs a list of steps on a timer (never blocking Krita's
event loop, which the docker's network answers need), writes a JSON report after every step, and
quits. Any Python exception inside Krita (an unhandled one via sys.excepthook, or one the docker's
guard caught) writes {"ok": false, ...} at once and exits, so the test fails fast.
"""
import json
import os
import sys
import time
import traceback

from krita import Extension, InfoObject, Krita, Selection
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtGui import QCursor, QImage
from PyQt5.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QListWidget, QPushButton, QSpinBox, QToolButton, QWidget

CONFIG = json.loads(os.environ.get("GANVAS_AUTOTEST_CONFIG") or "{}")
REPORT = {"ok": None, "steps": [], "started": time.time()}


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
    fail(f"unhandled Python exception in Krita: {kind.__name__}: {value}",
         "".join(traceback.format_exception(kind, value, tb)))


class Driver:
    instance = None

    def __init__(self):
        Driver.instance = self
        self.app = Krita.instance()
        self.docker = None
        self.doc = None
        self.steps = [
            ("find docker", 60, self.find_docker),
            ("create document", 30, self.create_document),
            ("start local server", 180, self.start_server),
            ("wait ready", 180, self.wait_ready),
            ("generate", 60, self.generate),
            ("wait results", 60, self.wait_results),
            ("insert as layer", 30, self.insert_layer),
            ("insert into selection", 30, self.insert_selection),
            ("refused prompt", 30, self.refused_prompt),
            ("wait refused", 30, self.wait_refused),
            ("live mode", 30, self.live_mode),
            ("wait live", 60, self.wait_live),
            ("screenshot", 30, self.screenshot),
            ("export", 60, self.export),
            ("quit", 30, self.quit),
        ]
        self.index = 0
        self.step_started = time.monotonic()
        self.step_state = {}
        self.timer = QTimer()
        self.timer.timeout.connect(self.tick)
        self.timer.start(100)

    # --- plumbing ---------------------------------------------------------------------------------------
    def w(self, cls, name):
        widget = self.docker.findChild(cls, name)
        if widget is None:
            fail(f"the docker has no {cls.__name__} named {name!r}")
        return widget

    def snapshot(self):
        if self.docker is None:
            return None
        return {name: self.docker.findChild(QLabel, name).text() for name in ("ganvasStatus", "ganvasMessage")
                if self.docker.findChild(QLabel, name) is not None}

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
            REPORT["steps"].append({"step": name, "seconds": round(time.monotonic() - self.step_started, 3),
                                    "docker": self.snapshot()})
            write_report()
            self.index += 1
            self.step_started = time.monotonic()
            self.step_state = {}
        elif time.monotonic() - self.step_started > limit:
            fail(f"step {name!r} did not finish within {limit} s")

    # --- steps ------------------------------------------------------------------------------------------
    def find_docker(self):
        for dock in self.app.dockers():
            if dock.objectName() == "ganvasDocker":
                self.docker = dock
                from ganvas_krita import guard  # the plugin's own module: its errors fail the test

                guard.listeners.append(lambda exc, text: fail(f"error inside the ganvas docker: {exc!r}", text))
                main = self.app.activeWindow().qwindow()
                main.resize(*CONFIG.get("window", (1440, 960)))
                for other in self.app.dockers():  # room for the docker in the screenshot
                    if other.objectName() not in ("ganvasDocker", "KisLayerBox"):
                        other.hide()
                main.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)  # a full-height column
                main.resizeDocks([dock], [CONFIG.get("docker_width", 330)], Qt.Orientation.Horizontal)
                dock.show()
                dock.raise_()
                REPORT["dockers"] = len([d for d in self.app.dockers() if d.objectName() == "ganvasDocker"])
                self.inject(CONFIG.get("inject"))
                return True
        return False

    def inject(self, kind):
        """Test the test: a deliberate bug must end the run at once with the error in the report."""
        if kind == "slot":  # an unhandled exception in a Qt slot reaches sys.excepthook
            QTimer.singleShot(0, lambda: 1 / 0)
        elif kind == "docker":  # a bug inside the docker is caught by its guard, which tells the listeners
            panel = self.docker.findChild(QWidget, "ganvasPanel")
            QTimer.singleShot(0, lambda: panel._task_finished(object()))
        if kind:
            self.steps.insert(self.index + 1, ("wait for the injected error", 30, lambda: False))

    def create_document(self):
        if self.doc is None:
            self.doc = self.app.createDocument(CONFIG["doc_size"], CONFIG["doc_size"], "ganvas-e2e", "RGBA", "U8",
                                               "", 72.0)
            self.app.activeWindow().addView(self.doc)
        return self.app.activeDocument() is not None and self.app.activeDocument().name() == "ganvas-e2e"

    def start_server(self):
        url = self.w(QLineEdit, "ganvasServerUrl")
        url.setText(CONFIG["server_url"])
        self.w(QLineEdit, "ganvasServerCommand").setText(CONFIG["server_command"])
        self.w(QLineEdit, "ganvasServerCommand").editingFinished.emit()
        self.w(QPushButton, "ganvasStartServer").click()
        return True

    def wait_ready(self):
        REPORT["local_server_pid"] = _local_server_pid()  # so the test can clean up if Krita dies
        return self.w(QLabel, "ganvasStatus").text().startswith("ready")

    def generate(self):
        self.w(QLineEdit, "ganvasPrompt").setText(CONFIG["prompt"])
        seed = self.w(QLineEdit, "ganvasSeed")
        seed.setText(str(CONFIG["seed"]))
        lock = self.w(QToolButton, "ganvasSeedLock")
        if not lock.isChecked():
            lock.click()
        self.w(QSpinBox, "ganvasCount").setValue(CONFIG["count"])
        self.w(QPushButton, "ganvasGenerate").click()
        return True

    def wait_results(self):
        results = self.w(QListWidget, "ganvasResults")
        message = self.w(QLabel, "ganvasMessage").text()
        if message.startswith(("invalid", "refused", "error", "timeout", "server")):
            fail(f"generation failed: {message}")
        if results.count() == CONFIG["count"]:
            REPORT["generated"] = message
            return True
        return False

    def _insert(self, button_name, row):
        results = self.w(QListWidget, "ganvasResults")
        results.setCurrentRow(row)
        before = [n.name() for n in self.doc.topLevelNodes()]
        self.w(QPushButton, button_name).click()
        self.doc.waitForDone()
        after = self.doc.topLevelNodes()
        new = [n for n in after if n.name() not in before]
        if not new:
            fail(f"{button_name} added no layer; message: {self.w(QLabel, 'ganvasMessage').text()}")
        node = new[0]
        rect = node.bounds()
        x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()
        pixels = bytes(node.pixelData(x, y, w, h))
        path = os.path.join(CONFIG["out_dir"], f"{button_name}.png")
        QImage(pixels, w, h, w * 4, QImage.Format.Format_ARGB32).copy().save(path)
        REPORT.setdefault("layers", {})[button_name] = {
            "name": node.name(), "bounds": [x, y, w, h], "png": path,
            "message": self.w(QLabel, "ganvasMessage").text()}
        return True

    def insert_layer(self):
        return self._insert("ganvasInsertLayer", 0)

    def insert_selection(self):
        sel = Selection()
        x, y, w, h = CONFIG["selection"]
        sel.select(x, y, w, h, 255)
        self.doc.setSelection(sel)
        return self._insert("ganvasInsertSelection", 1)

    def refused_prompt(self):
        self.w(QLineEdit, "ganvasPrompt").setText("x" * 1500)
        self.w(QPushButton, "ganvasGenerate").click()
        return True

    def wait_refused(self):
        message = self.w(QLabel, "ganvasMessage").text()
        if message.startswith("invalid"):
            REPORT["refused_message"] = message
            return True
        return False

    def live_mode(self):
        live = self.w(QCheckBox, "ganvasLive")
        if not live.isChecked():
            live.click()
        prompt = self.w(QLineEdit, "ganvasPrompt")
        prompt.clear()
        for i in range(1, len(CONFIG["live_prompt"]) + 1):  # keystroke by keystroke: the debounce collapses them
            prompt.setText(CONFIG["live_prompt"][:i])
        self.step_state["history_before"] = self.w(QComboBox, "ganvasHistory").count()
        REPORT["live_history_before"] = self.step_state["history_before"]
        return True

    def wait_live(self):
        history = self.w(QComboBox, "ganvasHistory")
        if history.count() >= 1 and CONFIG["live_prompt"][:20] in history.itemText(0):
            REPORT["live_history"] = [history.itemText(i) for i in range(history.count())]
            self.w(QCheckBox, "ganvasLive").click()
            return True
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
            self.step_state["waited"] = time.monotonic()
            return False
        if time.monotonic() - self.step_state["waited"] < 1.0:  # let the canvas repaint
            return False
        tool = self.app.action("KisToolSelectRectangular")  # no brush outline drawn on the canvas
        if tool is not None:
            tool.trigger()
        QCursor.setPos(self.docker.mapToGlobal(self.docker.rect().center()))
        self.docker.grab().save(os.path.join(CONFIG["out_dir"], "docker.png"))
        self.app.activeWindow().qwindow().grab().save(os.path.join(CONFIG["out_dir"], "window.png"))
        return True

    def export(self):
        self.doc.setSelection(Selection())
        self.doc.refreshProjection()
        self.doc.waitForDone()
        self.doc.setBatchmode(True)
        info = InfoObject()
        info.setProperty("alpha", True)
        info.setProperty("forceSRGB", False)
        path = os.path.join(CONFIG["out_dir"], "export.png")
        if not self.doc.exportImage(path, info):
            fail(f"exportImage({path}) returned False")
        REPORT["export"] = path
        REPORT["nodes"] = [n.name() for n in self.doc.topLevelNodes()]
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
