"""Drives the docker's panel outside Krita (offscreen Qt) against a real server; prints a JSON report.

Run by tests/krita_bridge/test_krita_client.py with a Python that has PyQt5 (Debian's python3-pyqt5, the Python
Krita itself uses): `python3 krita_panel_driver.py PLUGIN_PARENT SERVER_URL API_KEY RGBA_MODEL`. The
host is a recorder (Krita's document API exists only inside Krita; the e2e test covers the real one);
insertion still renders on the panel's image thread, as in Krita.
"""

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, sys.argv[1])

from ganvas_krita import canvas, guard, session  # noqa: E402
from ganvas_krita.client import GanvasClient, GenerateParams  # noqa: E402
from ganvas_krita.krita_host import InsertJob  # noqa: E402
from ganvas_krita.panel import GanvasPanel  # noqa: E402
from ganvas_krita.qt import QT_API, QApplication, QImage, QThread, QWidget, image_bytes  # noqa: E402
from ganvas_krita.settings import Settings  # noqa: E402
from ganvas_krita.widgets import OBJECT_NAMES  # noqa: E402

URL, KEY, RGBA_MODEL = sys.argv[2], sys.argv[3], sys.argv[4]
CANVAS = (0, 0, 100, 60)
report = {"errors": [], "qt_api": QT_API}
guard.listeners.append(lambda exc, text: report["errors"].append(text))
app = QApplication([])


class RecordingHost:
    """Krita's side of an insertion, recorded: a 100x60 canvas, no selection."""

    def __init__(self):
        self.calls = []
        self.prepared_on_ui = []

    def prepare_insert(self, png, name, target, fit, scaling):
        self.prepared_on_ui.append(QThread.currentThread() is app.thread())
        if target == "selection":
            raise canvas.CanvasError("nothing is selected: select an area first (or use Insert as layer)")
        return InsertJob(canvas.RenderRequest(png, CANVAS, fit, scaling), name, target)

    def finish_insert(self, job, rendered):
        self.calls.append(
            [
                job.target,
                job.name,
                job.request.png.hex(),
                [rendered.x, rendered.y, rendered.w, rendered.h],
                job.request.fit,
                job.request.scaling,
                QThread.currentThread() is app.thread(),
            ]
        )
        return f"inserted {job.name}"


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
report["essentials_height"] = panel.essentials_height()

step("connect", wait(lambda: panel.status.text().startswith("ready")))
report["start_visible_when_ready"] = panel.start_button.isVisibleTo(panel)
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
panel.fit.setCurrentIndex(panel.fit.findData("fill"))
panel.scaling.setCurrentIndex(panel.scaling.findData("pixel"))
panel.insert_layer_button.click()
report["insert_pending_after_click"] = panel.inserting and not host.calls  # the pixels render off the UI thread
step("insert_rendered", wait(lambda: not panel.inserting))
panel.insert_selection_button.click()
report["host_calls"] = [c[:2] + c[3:] for c in host.calls]
report["prepared_on_ui"] = host.prepared_on_ui
report["inserted_png"] = host.calls[0][2] if host.calls else None
step("insert", True)

# A typed seed is used whether or not it is locked; unlocked, a new one is drawn after Generate.
panel.seed_lock.setChecked(False)
panel.seed.setText("7")
panel.prompt.returnPressed.emit()  # Enter in the prompt
step("typed_seed", wait(lambda: panel.gen_ticket is None and len(panel.history) == 2))
report["typed_seeds"] = [im.seed for im in panel.shown_batch.images]
report["seed_after_unlocked"] = panel.seed.text()
report["typed_seed_message"] = panel.message.text()
panel.generate_button.click()
step("unlocked", wait(lambda: panel.gen_ticket is None and len(panel.history) == 3))
report["unlocked_seeds"] = [im.seed for im in panel.shown_batch.images]

panel.prompt.setText("something forbidden")
panel.generate_button.click()
step("refused", wait(lambda: panel.message.text().startswith("refused")))

panel.prompt.setText("")
panel.generate_button.click()
step("empty", wait(lambda: panel.message.text().startswith("invalid")))

# Live mode: ten keystrokes inside the debounce window make one request; a second prompt is a second live
# batch, and both stay in the history.
panel.live.setChecked(True)
before = len(panel.history)
for i in range(1, 11):
    panel.prompt.setText("a blue star"[: i + 1])
    app.processEvents()
step("live", wait(lambda: len(panel.history) == before + 1 and panel.gen_ticket is None))
wait(lambda: False, 0.6)  # longer than the debounce: no second request may follow
report["live_batches"] = len(panel.history) - before
report["live_prompt"] = panel.history[-1].params.prompt
panel.prompt.setText("a green moon")
step("live_second", wait(lambda: len(panel.history) == before + 2 and panel.gen_ticket is None))
report["live_history"] = [panel.history_box.itemText(i) for i in range(panel.history_box.count())]
panel.live.setChecked(False)

# Cancel: the answer of a cancelled request never reaches the results.
panel.prompt.setText("a green square")
shown = panel.shown_batch
panel.generate_button.click()
panel.cancel_button.click()
step("cancel", panel.gen_ticket is None and panel.message.text() == "cancelled")
wait(lambda: False, 0.5)
report["cancel_kept_results"] = panel.shown_batch is shown

# Server down: the docker says so where the painter looks (status, message under Generate, Generate's
# tooltip, Start local server beside the status), before anyone presses anything.
panel.url.setText("http://127.0.0.1:9")
panel.connect_button.click()
step("offline", wait(lambda: panel.status.text().startswith("offline")))
report["generate_enabled_offline"] = panel.generate_button.isEnabled()
report["offline_message_unprompted"] = panel.message.text()
report["offline_generate_tooltip"] = panel.generate_button.toolTip()
report["start_visible_offline"] = panel.start_button.isVisibleTo(panel)
panel.generate_button.click()  # disabled: a no-op
panel.generate(live=False)  # called directly: a message, not an exception
report["offline_generate_message"] = panel.message.text()
report["settings"] = dict(settings.store)

# Start local server with a command Krita cannot find (the Plugin Manager install): plain words, the
# Server section opens on the field to fix.
panel.server_command.setText("ganvas-not-on-this-path serve --port {port}")
panel.start_button.click()
report["not_found_message"] = panel.message.text()
report["server_section_open"] = panel.server_box.isVisibleTo(panel)

# Start/stop a local server with the configured command (a stand-in process that never answers HTTP),
# and one that exits at once: its last output line reaches the status.
panel.url.setText("http://127.0.0.1:9")
panel.server_command.setText(
    f"{sys.executable} -c \"import time; print('serving', flush=True); time.sleep(60)\" {{port}}"
)
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
mask = bytes([255] * 25 + [0] * 25) * 20  # left half selected
cut = canvas.apply_mask(scaled, mask)
alphas = image_bytes(cut.convertToFormat(QImage.Format.Format_ARGB32))[3::4]
report["mask_alpha_left_right"] = [
    min(alphas[r * 50 + c] for r in range(20) for c in range(25)),
    max(alphas[r * 50 + c] for r in range(20) for c in range(25, 50)),
]
report["full_mask_untouched"] = canvas.apply_mask(scaled, bytes([255] * 1000)) is scaled
try:
    canvas.decode_png(b"not a png")
except canvas.CanvasError as exc:
    report["bad_png"] = str(exc)

# render(): placement for each fit, nearest-neighbour for pixel art, and straight alpha kept (RGBA model)
rgba_png = GanvasClient(URL, KEY).generate(GenerateParams("a red circle", seed=5, model=RGBA_MODEL))[0][0].png
rgba = canvas.decode_png(rgba_png)
report["rgba_has_alpha"] = rgba.hasAlphaChannel()
source = image_bytes(rgba)
report["rgba_alpha_range"] = [min(source[3::4]), max(source[3::4])]
renders = {}
for fit in canvas.FITS:
    for scaling in canvas.SCALINGS:
        out = canvas.render(canvas.RenderRequest(rgba_png, (10, 20, 100, 60), fit, scaling))
        renders[f"{fit}/{scaling}"] = [out.x, out.y, out.w, out.h]
        if fit == "actual":
            report["actual_bytes_equal"] = out.data == source  # byte for byte, alpha included
        if (fit, scaling) == ("inside", "pixel"):
            colours = {out.data[i : i + 4] for i in range(0, len(out.data), 4)}
            report["pixel_art_new_colours"] = len(colours - {source[i : i + 4] for i in range(0, len(source), 4)})
        if (fit, scaling) == ("inside", "smooth"):
            report["smooth_alpha_range"] = [min(out.data[3::4]), max(out.data[3::4])]
report["renders"] = renders
sel_mask = bytes([255] * 50 + [0] * 50) * 60  # a selection whose left half is selected
out = canvas.render(canvas.RenderRequest(rgba_png, (0, 0, 100, 60), "fill", "smooth", mask=sel_mask, clip=True))
report["masked_fill"] = [out.x, out.y, out.w, out.h, max(out.data[3 + 4 * 60 :: 400]), min(out.data[3 + 4 * 10 :: 400])]
out = canvas.render(
    canvas.RenderRequest(rgba_png, (5, 5, 20, 10), "actual", "smooth", mask=bytes([255] * 200), clip=True)
)
report["actual_clipped"] = [out.x, out.y, out.w, out.h]
try:
    canvas.render(canvas.RenderRequest(b"junk", (0, 0, 10, 10)))
except canvas.CanvasError as exc:
    report["render_bad_png"] = str(exc)

# Sizes: what the server lists for the chosen model (an upsampler's), else the defaults
panel.server_model = "up"
panel._fill_models([{"id": "up", "resolution": 64, "styles": [], "sizes": [256, 128, 64]}])
report["size_choices"] = [[panel.size.itemData(i), panel.size.itemText(i)] for i in range(panel.size.count())]

# History: bounded across live batches, by count and by bytes
history = session.History(limit=6, live_limit=3, max_bytes=10**9)
params = [GenerateParams(f"p{i}", seed=i) for i in range(8)]
img = lambda: [session.GeneratedImage(b"x" * 10, 1, "p")]  # noqa: E731
for i in range(5):
    history.add(session.Batch(params[i], img(), 0.01, live=True))
history.add(session.Batch(params[4], img(), 0.01, live=True))  # the same request again: replaces
history.add(session.Batch(params[5], img(), 0.01))
report["history_bounded"] = [(b.params.prompt, b.live) for b in history.batches]
tight = session.History(max_bytes=25)
for i in range(3):
    tight.add(session.Batch(params[i], img(), 0.01))
report["history_bytes"] = [b.params.prompt for b in tight.batches]

panel.shutdown()
print(json.dumps(report))
