"""Drives the docker's panel outside Krita (offscreen Qt) against a real server; prints a JSON report.

Run by tests/test_krita_client.py with a Python that has PyQt5 (Debian's python3-pyqt5, the Python
Krita itself uses): `python3 krita_panel_driver.py PLUGIN_PARENT SERVER_URL API_KEY`. The host is a
recorder (Krita's document API exists only inside Krita; the e2e test covers the real one).
"""
import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, sys.argv[1])

from ganvas_krita import canvas, guard  # noqa: E402
from ganvas_krita.panel import GanvasPanel  # noqa: E402
from ganvas_krita.widgets import OBJECT_NAMES  # noqa: E402
from ganvas_krita.qt import QApplication, QImage, QWidget, image_bytes  # noqa: E402
from ganvas_krita.settings import Settings  # noqa: E402

URL, KEY = sys.argv[2], sys.argv[3]
report = {"errors": []}
guard.listeners.append(lambda exc, text: report["errors"].append(text))
app = QApplication([])


class RecordingHost:
    def __init__(self):
        self.calls = []

    def insert_layer(self, png, name):
        self.calls.append(["layer", name, png.hex()])
        return f"inserted {name}"

    def insert_into_selection(self, png, name):
        raise canvas.CanvasError("nothing is selected: select an area first (or use Insert as layer)")


def wait(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.005)
    return False


def step(name, ok):
    report[name] = {"ok": bool(ok), "status": panel.status.text(), "message": panel.message.text()}


settings = Settings.memory({"server_url": URL, "api_key": KEY, "count": "3"})
host = RecordingHost()
panel = GanvasPanel(settings, host)
report["missing_names"] = [n for n in OBJECT_NAMES if panel.findChild(QWidget, n) is None]

step("connect", wait(lambda: panel.status.text().startswith("ready")))
report["models"] = [panel.model.itemData(i) for i in range(panel.model.count())]
report["style_choices"] = [panel.style.itemText(i) for i in range(panel.style.count())]

panel.prompt.setText("a red circle")
panel.seed.setText("41")
panel.seed_lock.setChecked(True)
panel.generate_button.click()
# The answer can only arrive through Qt's event loop (a queued signal): the click has already returned.
report["pending_after_click"] = panel.gen_ticket is not None and panel.results.count() == 0
step("generate", wait(lambda: panel.results.count() == 3 and panel.gen_ticket is None))
report["seeds"] = [im.seed for im in panel.shown_batch.images]
report["pngs"] = [im.png.hex() for im in panel.shown_batch.images]

panel.results.setCurrentRow(2)
panel.insert_layer_button.click()
panel.insert_selection_button.click()
report["host_calls"] = [c[:2] for c in host.calls]
report["inserted_png"] = host.calls[0][2] if host.calls else None
step("insert", True)

panel.seed_lock.setChecked(False)
panel.generate_button.click()
step("unlocked", wait(lambda: panel.gen_ticket is None and len(panel.history) == 2))
report["unlocked_seed"] = panel.seed.text()

panel.prompt.setText("something forbidden")
panel.generate_button.click()
step("refused", wait(lambda: panel.message.text().startswith("refused")))

panel.prompt.setText("")
panel.generate_button.click()
step("empty", wait(lambda: panel.message.text().startswith("invalid")))

# Live mode: ten keystrokes inside the debounce window make one request.
panel.live.setChecked(True)
before = len(panel.history)
for i in range(1, 11):
    panel.prompt.setText("a blue star"[:i + 1])
    app.processEvents()
step("live", wait(lambda: len(panel.history) == before + 1 and panel.gen_ticket is None))
wait(lambda: False, 0.6)  # longer than the debounce: no second request may follow
report["live_batches"] = len(panel.history) - before
report["live_prompt"] = panel.history[-1].params.prompt
panel.live.setChecked(False)

# Cancel: the answer of a cancelled request never reaches the results.
panel.prompt.setText("a green square")
shown = panel.shown_batch
panel.generate_button.click()
panel.cancel_button.click()
step("cancel", panel.gen_ticket is None and panel.message.text() == "cancelled")
wait(lambda: False, 0.5)
report["cancel_kept_results"] = panel.shown_batch is shown

# Server down: the docker says so, Generate is disabled, nothing raises.
panel.url.setText("http://127.0.0.1:9")
panel.connect_button.click()
step("offline", wait(lambda: panel.status.text().startswith("offline")))
report["generate_enabled_offline"] = panel.generate_button.isEnabled()
panel.generate_button.click()  # disabled: a no-op
panel.generate(live=False)     # called directly: a message, not an exception
report["offline_generate_message"] = panel.message.text()
report["settings"] = settings.store

# Start/stop a local server with the configured command (a stand-in process that never answers HTTP),
# and one that exits at once: its last output line reaches the status.
panel.url.setText("http://127.0.0.1:9")
panel.server_command.setText(f"{sys.executable} -c \"import time; print('serving', flush=True); time.sleep(60)\" {{port}}")
panel.start_button.click()
report["local_started"] = panel.local.running and panel.local.args[-1] == "9"
report["start_button_text"] = panel.start_button.text()
step("local_starting", wait(lambda: "local server is starting" in panel.status.text()))
pid = panel.local.process.pid
panel.start_button.click()
report["local_stop_message"] = panel.message.text()
report["local_stopped"] = panel.local.finish_stopping(5) is not None and not os.path.exists(f"/proc/{pid}/cmdline")
panel.server_command.setText(f"{sys.executable} -c \"import sys; sys.exit('ganvas: no such model')\"")
panel.start_button.click()
step("local_exited", wait(lambda: "exited with code 1" in panel.status.text()))

# canvas helpers on real Qt images
image = canvas.decode_png(bytes.fromhex(report["pngs"][0]))
report["decoded_size"] = [image.width(), image.height()]
bgra = canvas.bgra_bytes(image)
report["bgra_first_pixel"] = list(bgra[:4])
rgb = image.pixelColor(0, 0)
report["rgb_first_pixel"] = [rgb.red(), rgb.green(), rgb.blue(), rgb.alpha()]
scaled = canvas.fit(image, 50, 20)
report["fit_size"] = [scaled.width(), scaled.height()]
mask = bytes([255] * 25 + [0] * 25) * 20          # left half selected
cut = canvas.apply_mask(scaled, mask)
alphas = image_bytes(cut.convertToFormat(QImage.Format.Format_ARGB32))[3::4]
report["mask_alpha_left_right"] = [min(alphas[r * 50 + c] for r in range(20) for c in range(25)),
                                   max(alphas[r * 50 + c] for r in range(20) for c in range(25, 50))]
report["full_mask_untouched"] = canvas.apply_mask(scaled, bytes([255] * 1000)) is scaled
try:
    canvas.decode_png(b"not a png")
except canvas.CanvasError as exc:
    report["bad_png"] = str(exc)

panel.shutdown()
print(json.dumps(report))
