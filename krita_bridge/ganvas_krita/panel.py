"""The docker's behaviour: connection, generation, live mode, results, insertion, history, settings.

The widgets come from widgets.py (stable object names: OBJECT_NAMES there). All network work runs
through `Tasks`; slots are `guarded`, so nothing here can freeze Krita or open its traceback dialog.

`ganvasStatus` describes the connection and starts with "ready" when the server answers; the outcome
of the last action (generated, inserted, refused, timed out) goes to `ganvasMessage`, right under
Generate. While no server answers, Generate is disabled and says why in three places: the status
line (with Start local server beside it), Generate's tooltip and the message line.

Seeds: Generate always uses the seed in the Seed field (type one to reproduce a layer's "seed N");
the lock only decides whether a new random seed is drawn into the field after each Generate.

Insertion scales on a worker thread (tasks.submit_image + canvas.render); only the host's
prepare/finish steps touch Krita, on the UI thread.
"""

from __future__ import annotations

from . import canvas
from .canvas import CanvasError
from .client import MAX_N, ClientError, GanvasClient, GenerateParams, is_loopback_url, normalize_url, probe
from .guard import guarded
from .local_server import SHARED, LocalServer
from .qt import QIcon, QListWidgetItem, QPixmap, Qt, QTimer
from .session import Batch, History, layer_name, parse_seed, random_seed
from .settings import Settings
from .tasks import Tasks, Ticket
from .widgets import DEFAULT_SIZES, STYLE_SUGGESTIONS, THUMB, DockerWidgets, size_label

LIVE_DELAY_MS = 300  # debounce while typing
POLL_READY_MS = 15000  # health check while connected (notices a server that went away)
POLL_WAITING_MS = 2000  # while offline or loading
POLL_STARTING_MS = 500  # while a local server we started is coming up
STOP_GRACE_MS = 5000  # "Stop local server": SIGTERM, then kill after this
MAX_SIZE = 4096  # the largest output size a setting may ask for


def canvas_default_size(sizes, native: int | None, canvas: tuple[int, int]) -> int:
    """The Size box's default for a canvas (its item data: 0 = native): the largest offered side not above
    the canvas's shorter side; else (a canvas smaller than every size) the largest offered side. Without a
    document the box keeps its choice (native at first)."""
    sides = {(native if side == 0 else side): side for side in sizes if side or native}
    if not sides:
        return 0
    fitting = [side for side in sides if side <= min(canvas)]
    return sides[max(fitting)] if fitting else sides[max(sides)]


class GanvasPanel(DockerWidgets):
    def __init__(self, settings: Settings, host, parent=None, local_server: LocalServer | None = None):
        super().__init__(parent)
        self.settings = settings
        self.host = host
        self.local = local_server or SHARED
        self.tasks = Tasks(self)
        self.tasks.finished.connect(self._task_finished)
        self.history = History()
        self.client: GanvasClient | None = None
        self.connected = False
        self.offline_reason = "connecting\u2026"
        self.server_model: str | None = None
        self.models: list[dict] = []
        self.probe_ticket: Ticket | None = None
        self.gen_ticket: Ticket | None = None
        self.gen_params: GenerateParams | None = None
        self.insert_jobs: dict[int, object] = {}  # ticket id -> the host's job, while its pixels render
        self.shown_batch: Batch | None = None
        self._connect_signals()
        self._load_settings()
        self.poll_timer = QTimer(self)
        self.poll_timer.setSingleShot(True)
        self.poll_timer.timeout.connect(self.check_connection)
        self.live_timer = QTimer(self)
        self.live_timer.setSingleShot(True)
        self.live_timer.setInterval(LIVE_DELAY_MS)
        self.live_timer.timeout.connect(self._live_fire)
        self._update_buttons()
        QTimer.singleShot(0, self.reconnect)

    def _connect_signals(self) -> None:
        self.connect_button.clicked.connect(self.reconnect)
        self.url.returnPressed.connect(self.reconnect)
        self.url.editingFinished.connect(self._url_edited)
        self.start_button.clicked.connect(self.toggle_local_server)
        self.model.currentIndexChanged.connect(self._model_chosen)
        self.prompt.returnPressed.connect(self.generate)
        self.prompt.textChanged.connect(self._prompt_edited)
        self.style.currentTextChanged.connect(self._style_edited)
        self.seed.editingFinished.connect(self._seed_edited)
        self.seed_lock.toggled.connect(self._seed_lock_toggled)
        self.seed_random.clicked.connect(self.randomise_seed)
        self.count.valueChanged.connect(self._count_changed)
        self.size.currentIndexChanged.connect(self._size_changed)
        self.truncation.valueChanged.connect(self._truncation_changed)
        self.live.toggled.connect(self._live_toggled)
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel)
        self.results.currentRowChanged.connect(self._result_chosen)
        self.results.itemDoubleClicked.connect(self.insert_layer)
        self.insert_layer_button.clicked.connect(self.insert_layer)
        self.insert_selection_button.clicked.connect(self.insert_selection)
        self.fit.currentIndexChanged.connect(self._fit_changed)
        self.scaling.currentIndexChanged.connect(self._scaling_changed)
        self.history_box.activated.connect(self._history_chosen)
        self.options_toggle.toggled.connect(self._options_toggled)
        self.server_command.editingFinished.connect(self._command_edited)
        self.api_key.editingFinished.connect(self._api_key_edited)

    def _load_settings(self) -> None:
        s = self.settings
        widgets = (
            self.url,
            self.style,
            self.seed,
            self.seed_lock,
            self.count,
            self.size,
            self.truncation,
            self.live,
            self.server_command,
            self.api_key,
            self.fit,
            self.scaling,
            self.options_toggle,
        )
        for widget in widgets:
            widget.blockSignals(True)
        try:
            self.url.setText(s.text("server_url"))
            self.style.setEditText(s.text("style"))
            self.seed.setText(str(s.integer("seed", 0, 2**53 - 1)))
            self.seed_lock.setChecked(s.flag("seed_locked"))
            self.count.setValue(s.integer("count", 1, MAX_N))
            self._offer_sizes(DEFAULT_SIZES, wanted=s.integer("size", 0, MAX_SIZE))
            self.size_picked = s.has("size")  # else the Size box follows the canvas (canvas_default_size)
            self.truncation.setValue(round(s.number("truncation", 0.01, 1.0) * 100))
            self.live.setChecked(s.flag("live"))
            self.server_command.setText(s.server_command())
            self.api_key.setText(s.text("api_key"))
            self.fit.setCurrentIndex(max(0, self.fit.findData(s.choice("fit", canvas.FITS))))
            self.scaling.setCurrentIndex(max(0, self.scaling.findData(s.choice("scaling", canvas.SCALINGS))))
            self.options_toggle.setChecked(s.flag("options_open"))
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self.options.setVisible(self.options_toggle.isChecked())
        self.options_toggle.setArrowType(
            Qt.ArrowType.DownArrow if self.options_toggle.isChecked() else Qt.ArrowType.RightArrow
        )
        self.truncation_label.setText(f"{self.truncation.value() / 100:.2f}")
        self.seed_lock.setText("Locked" if self.seed_lock.isChecked() else "Lock")
        self.timeout = s.number("timeout", 1.0, 600.0)

    # --- messages --------------------------------------------------------------------------------------------
    def set_status(self, text: str, ready: bool = False, offline: bool = False) -> None:
        """The status line; `offline` (no server answers) also puts the hint under Generate, unless the
        message line says something newer (an error from Start local server, say)."""
        was_ready = self.connected
        self.connected = ready
        self.status.setText(text)
        self.status.setToolTip(text)  # the line shows three lines at most
        shown = self.message.text()
        if ready:
            self.offline_reason = ""
            if self._offline_hint_text and shown == self._offline_hint_text:
                self.say("")
        elif offline and (was_ready or not shown or shown == self._offline_hint_text or shown == "generating\u2026"):
            self._offline_hint()
        self._update_buttons()

    _offline_hint_text = ""

    def _offline_hint(self) -> None:
        text = f"Generate needs a server: {self._how_to_connect(short=True)}."
        self._offline_hint_text = text
        self.say(text)

    def _how_to_connect(self, short: bool = False) -> str:
        if self.local.running:
            return "the local server is starting\u2026"
        if self._url_is_local():
            how = "press Start local server, or run \u201cganvas serve\u201d in a terminal"
            return how if short else how + ", or set another URL under Server"
        return "check the URL under Server" if short else "check the URL under Server, then press Connect"

    def _url_is_local(self) -> bool:
        try:
            return is_loopback_url(self.url.text())
        except ClientError:
            return False

    def say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setToolTip(text)  # the line shows three lines at most

    def show_internal_error(self, exc: BaseException) -> None:
        self.say(f"internal error in the ganvas plugin: {type(exc).__name__}: {exc} (details in Krita's log)")

    def describe_error(self, error: ClientError) -> str:
        kind = error.kind
        if error.param == "server_command" or kind == "setup":
            self.server_toggle.setChecked(True)  # show the field the message talks about
            return error.message if kind == "setup" else f"Server > Command: {error.message}"
        if error.param == "url":
            self.server_toggle.setChecked(True)
            return f"Server > URL: {error.message}"
        if kind in ("refused",):
            return f"refused: {error.message}"
        if kind == "invalid":
            named = error.param and not error.message.startswith(str(error.param))
            return f"invalid {error.param}: {error.message}" if named else f"invalid: {error.message}"
        if kind == "busy":
            wait = f"; retry in {error.retry_after:.0f} s" if error.retry_after else ""
            return f"server busy: {error.message}{wait}"
        if kind == "timeout":
            return f"timeout: {error.message}"
        if kind == "offline":
            return f"server unreachable: {error.message}"
        if kind == "auth":
            return f"not allowed: {error.message} (check the API key under Server)"
        if kind == "not_found":
            return f"not found: {error.message}"
        if kind == "cancelled":
            return "cancelled"
        if kind == "canvas":
            return error.message
        return f"error: {error.message}"

    def _update_buttons(self) -> None:
        busy = self.gen_ticket is not None
        chosen = self._chosen_image() is not None
        self.generate_button.setEnabled(self.connected)
        if self.connected:
            self.generate_button.setToolTip("generate images for the prompt (Enter in the prompt does the same)")
        else:
            how = self._how_to_connect()
            self.generate_button.setToolTip(
                f"not connected ({self.offline_reason or self.status.text()}): {how[0].upper()}{how[1:]}."
            )
        self.cancel_button.setEnabled(busy)
        self.insert_layer_button.setEnabled(chosen)
        self.insert_selection_button.setEnabled(chosen)
        running = self.local.running
        self.start_button.setText("Stop local server" if running else "Start local server")
        # Offered where it can help: a local URL and no answer yet, or our own server to stop.
        self.start_button.setVisible(running or (not self.connected and self._url_is_local()))

    # --- connection --------------------------------------------------------------------------------------------
    @guarded
    def reconnect(self, *_):
        """Apply the URL field and check the server now."""
        self.settings.set("server_url", self.url.text().strip())
        try:
            self.client = GanvasClient(self.url.text(), self.api_key.text() or None, timeout=self.timeout)
        except ClientError as exc:
            self.client = None
            self.offline_reason = exc.message
            self.set_status(f"offline \u2014 {exc.message}", offline=True)
            return
        if self.probe_ticket is not None:
            self.probe_ticket.cancel()
            self.probe_ticket = None
        self.set_status(f"connecting to {self.client.base}\u2026", ready=self.connected)
        self.check_connection()

    @guarded
    def check_connection(self, *_):
        if self.client is None or self.probe_ticket is not None:
            return
        client = self.client
        self.probe_ticket = self.tasks.submit("probe", lambda call: (client, probe(client, call)))

    def _schedule_poll(self) -> None:
        if self.local.running and not self.connected:
            delay = POLL_STARTING_MS
        else:
            delay = POLL_READY_MS if self.connected else POLL_WAITING_MS
        self.poll_timer.start(delay)

    def _probe_done(self, ticket: Ticket) -> None:
        self.probe_ticket = None
        if ticket.error is not None:
            if ticket.error.kind == "cancelled":
                return
            state = "not allowed" if ticket.error.kind == "auth" else "offline"
            self.offline_reason = ticket.error.message
            self.set_status(f"{state} \u2014 {ticket.error.message}" + self._local_server_note(), offline=True)
        else:
            client, info = ticket.result
            if client is not self.client:
                return  # the URL changed meanwhile; that probe runs now
            if info.status == "ok":
                self.server_model = info.model
                self._fill_models(info.models)
                self.set_status(f"ready \u2014 {client.base}, {self._model_label()}", ready=True)
            elif info.status == "loading":
                self.offline_reason = f"{client.base} is still loading its model"
                self.set_status(f"loading \u2014 {client.base} is loading its model\u2026", offline=True)
            else:
                self.offline_reason = f"{client.base} says {info.status}"
                self.set_status(
                    f"offline \u2014 {client.base} says {info.status}" + self._local_server_note(), offline=True
                )
        self._schedule_poll()

    def _model_card(self) -> dict:
        name = self.current_model() or self.server_model
        return next((m for m in self.models if m.get("id") == name), {})

    def _model_label(self) -> str:
        card = self._model_card()
        name = self.current_model() or self.server_model
        res = card.get("resolution")
        return f"{name or 'default model'}" + (f" ({res} px)" if res else "")

    def _local_server_note(self) -> str:
        if self.local.process is None:
            return ""
        code = self.local.exit_code()
        if code is None:
            return " (the local server is starting\u2026)"
        tail = self.local.log_tail()
        self.local.stop()
        self._update_buttons()
        return f" (the local server exited with code {code}: {tail or 'no output'})"

    def _fill_models(self, models: list[dict]) -> None:
        names = [m["id"] for m in models]
        if models == self.models and names == [self.model.itemData(i) for i in range(self.model.count())]:
            return
        self.models = models
        wanted = self.current_model() or self.settings.text("model") or self.server_model
        self.model.blockSignals(True)
        try:
            self.model.clear()
            for m in models:
                label = m["id"] + (" (default)" if m["id"] == self.server_model else "")
                self.model.addItem(label, m["id"])
            index = (
                names.index(wanted)
                if wanted in names
                else (names.index(self.server_model) if self.server_model in names else 0)
            )
            self.model.setCurrentIndex(index)
        finally:
            self.model.blockSignals(False)
        self._offer_styles()
        self._offer_model_sizes()

    def _offer_styles(self) -> None:
        """The Style box suggests the chosen model's style words (the server lists them once it has loaded
        the model); whatever the user typed stays."""
        card = self._model_card()
        styles = [s for s in card.get("styles") or [] if isinstance(s, str)]
        wanted = ["", *styles] if styles else list(STYLE_SUGGESTIONS)
        if wanted == [self.style.itemText(i) for i in range(self.style.count())]:
            return
        typed = self.style.currentText()
        blocked = self.style.blockSignals(True)
        try:
            self.style.clear()
            self.style.addItems(wanted)
            self.style.setEditText(typed)
        finally:
            self.style.blockSignals(blocked)

    def _offer_model_sizes(self) -> None:
        """The Size box offers the sizes the server lists for the chosen model (GET /v1/models "sizes", e.g.
        64, 128 and 256 px with the x4 upsampler), else DEFAULT_SIZES; native is always first. Until the user
        picks a size, the chosen one follows the canvas (canvas_default_size) among the listed sizes."""
        card = self._model_card()
        native = card.get("resolution")
        listed = [int(v) for v in card.get("sizes") or [] if isinstance(v, int) and 0 < v <= MAX_SIZE]
        sizes = (0, *sorted(set(listed) - {native})) if listed else DEFAULT_SIZES
        wanted = int(self.size.currentData() or 0)
        canvas = self._canvas_size() if listed and not getattr(self, "size_picked", True) else None
        if canvas:
            wanted = canvas_default_size(sizes, native, canvas)
        self._offer_sizes(sizes, wanted=wanted, native=native)

    def _canvas_size(self) -> tuple[int, int] | None:
        """The open document's (width, height), None without one (or a host that cannot say)."""
        size = getattr(self.host, "canvas_size", None)
        try:
            found = size() if callable(size) else None
        except Exception:  # a host error must not break the Size box
            return None
        return tuple(found) if found and all(isinstance(v, int) and v > 0 for v in found) else None

    def _offer_sizes(self, sizes, wanted: int = 0, native: int | None = None) -> None:
        current = [(self.size.itemData(i), self.size.itemText(i)) for i in range(self.size.count())]
        blocked = self.size.blockSignals(True)
        if current == [(side, size_label(side, native)) for side in sizes] and (wanted in sizes or not wanted):
            self.size.setCurrentIndex(max(0, self.size.findData(wanted)))  # same list: only the choice moves
            self.size.blockSignals(blocked)
            return
        try:
            self.size.clear()
            for side in sizes:
                self.size.addItem(size_label(side, native), side)
            if wanted and wanted not in sizes:  # a size kept from another model or server: still offered
                self.size.addItem(size_label(wanted), wanted)
            self.size.setCurrentIndex(max(0, self.size.findData(wanted)))
        finally:
            self.size.blockSignals(blocked)

    def current_model(self) -> str | None:
        value = self.model.currentData()
        return str(value) if value else None

    # --- local server --------------------------------------------------------------------------------------------
    @guarded
    def toggle_local_server(self, *_):
        if self.local.running:
            self.local.terminate()  # the server finishes what it is doing; Krita does not wait for it
            QTimer.singleShot(STOP_GRACE_MS, self._finish_stopping)
            self.say("stopping the local server")
            self._update_buttons()
            self.reconnect()
            return
        command = self.server_command.text().strip() or self.settings.server_command()
        try:
            args = self.local.start(command, self.url.text())
        except ClientError as exc:
            self.say(self.describe_error(exc))
            return
        self.say(f"starting the local server: {' '.join(args)} (log: {self.local.log_path})")
        self._update_buttons()
        self.reconnect()

    @guarded
    def _finish_stopping(self, *_):
        code = self.local.finish_stopping(0.0)  # kills one that ignored SIGTERM for STOP_GRACE_MS
        if code is not None:
            self.say(f"stopped the local server (exit code {code})")

    @guarded
    def shutdown(self, *_):
        """Krita is closing: stop what we started, forget what is in flight."""
        self.poll_timer.stop()
        self.live_timer.stop()
        for ticket in (self.gen_ticket, self.probe_ticket):
            if ticket is not None:
                ticket.cancel()
        self.gen_ticket = self.probe_ticket = None
        self.insert_jobs.clear()
        if self.local.running:
            self.local.stop()

    # --- generation --------------------------------------------------------------------------------------------
    def _params(self) -> GenerateParams:
        if not getattr(self, "size_picked", True):
            self._offer_model_sizes()  # the canvas may have changed since the sizes were offered
        n = self.count.value()
        if not self.prompt.text().strip():
            raise ClientError("invalid", "the prompt is empty", param="prompt")
        seed = parse_seed(self.seed.text(), n)  # the typed seed is always used; the lock acts after Generate
        self.settings.set("seed", seed)
        return GenerateParams(
            prompt=self.prompt.text().strip(),
            n=n,
            seed=seed,
            truncation=self.truncation.value() / 100,
            style=self.style.currentText().strip() or None,
            model=self.current_model(),
            size=self.size.currentData() or None,
        ).check()

    @guarded
    def generate(self, *_, live: bool = False):
        if self.client is None or not self.connected:
            self._offline_hint()
            return
        try:
            params = self._params()
        except ClientError as exc:
            if not live:
                self.say(self.describe_error(exc))
            return
        if self.gen_ticket is not None:  # the newest request wins; the older answer would be stale
            self.gen_ticket.cancel()
        client = self.client
        self.gen_params = params
        self.gen_ticket = self.tasks.submit("live" if live else "generate", lambda call: client.generate(params, call))
        self.say("generating\u2026")
        self._update_buttons()

    @guarded
    def cancel(self, *_):
        self.live_timer.stop()
        if self.gen_ticket is not None:
            self.gen_ticket.cancel()
            self.gen_ticket = None
            self.say("cancelled")
        self._update_buttons()

    def _generate_done(self, ticket: Ticket) -> None:
        if ticket is not self.gen_ticket:
            return  # superseded or cancelled
        self.gen_ticket = None
        if ticket.error is not None:
            self.say(self.describe_error(ticket.error))
            if ticket.error.kind == "offline":
                self.offline_reason = ticket.error.message
                self.set_status(f"offline \u2014 {ticket.error.message}")  # the error stays in the message line
                self.poll_timer.start(POLL_WAITING_MS)
        else:
            images, elapsed = ticket.result
            live = ticket.kind == "live"
            batch = self.history.add(Batch(self.gen_params, images, elapsed, live=live))
            self._refresh_history(batch)
            self.show_batch(batch)
            summary = batch.summary()
            if not live and not self.seed_lock.isChecked() and self.seed.text().strip() == str(self.gen_params.seed):
                self.seed.setText(str(random_seed()))  # unlocked: the next Generate gets a new seed
                self.settings.set("seed", self.seed.text())
                summary += f" \u00b7 next seed {self.seed.text()} (Lock keeps a seed)"
            self.say(summary)
        self._update_buttons()

    @guarded
    def _task_finished(self, ticket: Ticket):
        if ticket.kind == "probe":
            if ticket is self.probe_ticket:
                self._probe_done(ticket)
        elif ticket.kind == "insert":
            self._insert_done(ticket)
        else:
            self._generate_done(ticket)

    # --- live mode --------------------------------------------------------------------------------------------
    @guarded
    def _prompt_edited(self, *_):
        if self.live.isChecked() and self.prompt.text().strip():
            self.live_timer.start()  # restarts: fires LIVE_DELAY_MS after the last keystroke

    @guarded
    def _live_fire(self):
        if self.live.isChecked() and self.connected:
            self.generate(live=True)

    @guarded
    def _live_toggled(self, on):
        self.settings.set("live", bool(on))
        if on:
            self._prompt_edited()
        else:
            self.live_timer.stop()

    # --- results --------------------------------------------------------------------------------------------
    def show_batch(self, batch: Batch) -> None:
        self.shown_batch = batch
        self.results.clear()
        for index, image in enumerate(batch.images):
            try:
                thumb = canvas.thumbnail(canvas.decode_png(image.png), THUMB)
            except CanvasError:
                continue
            item = QListWidgetItem(QIcon(QPixmap.fromImage(thumb)), f"seed {image.seed}")
            item.setData(Qt.ItemDataRole.UserRole, index)
            item.setToolTip(layer_name(image.prompt, image.seed))
            self.results.addItem(item)
        if self.results.count():
            self.results.setCurrentRow(0)
        self._update_buttons()

    def _refresh_history(self, current: Batch) -> None:
        self.history_box.blockSignals(True)
        try:
            self.history_box.clear()
            for batch in reversed(self.history.batches):
                self.history_box.addItem(batch.label())
            self.history_box.setCurrentIndex(len(self.history) - 1 - self.history.batches.index(current))
        finally:
            self.history_box.blockSignals(False)

    @guarded
    def _history_chosen(self, row):
        if 0 <= row < len(self.history):
            batch = self.history[len(self.history) - 1 - row]
            self.show_batch(batch)
            self.say(f"from the history: {batch.summary()}")

    def _chosen_image(self):
        item = self.results.currentItem()
        if item is None or self.shown_batch is None:
            return None
        return self.shown_batch.images[item.data(Qt.ItemDataRole.UserRole)]

    @guarded
    def _result_chosen(self, *_):
        self._update_buttons()

    # --- insertion --------------------------------------------------------------------------------------------
    @guarded
    def insert_layer(self, *_):
        self._insert("canvas")

    @guarded
    def insert_selection(self, *_):
        self._insert("selection")

    def _insert(self, target: str) -> None:
        image = self._chosen_image()
        if image is None:
            self.say("choose a result first")
            return
        fit, scaling = self.fit.currentData() or "inside", self.scaling.currentData() or "smooth"
        try:
            job = self.host.prepare_insert(image.png, layer_name(image.prompt, image.seed), target, fit, scaling)
        except CanvasError as exc:
            self.say(str(exc))
            return
        ticket = self.tasks.submit_image("insert", lambda call: _render(job.request))
        self.insert_jobs[ticket.id] = job
        self.say("inserting\u2026")

    def _insert_done(self, ticket: Ticket) -> None:
        if ticket.id not in self.insert_jobs:
            return  # the docker shut down meanwhile
        if self._finishing:
            # Node.addChildNode waits for Krita's image and may run the event loop meanwhile: finish one
            # insertion at a time.
            QTimer.singleShot(20, lambda: self._task_finished(ticket))
            return
        job = self.insert_jobs.pop(ticket.id)
        if ticket.error is not None:
            self.say(self.describe_error(ticket.error))
            return
        self._finishing = True
        try:
            self.say(self.host.finish_insert(job, ticket.result))
        except CanvasError as exc:
            self.say(str(exc))
        finally:
            self._finishing = False

    _finishing = False

    @property
    def inserting(self) -> bool:
        return bool(self.insert_jobs) or self._finishing

    # --- settings --------------------------------------------------------------------------------------------
    @guarded
    def _url_edited(self, *_):
        self.settings.set("server_url", self.url.text().strip())
        try:
            changed = self.client is None or normalize_url(self.url.text()) != self.client.base
        except ClientError:
            changed = True
        if changed:
            self.reconnect()

    @guarded
    def _model_chosen(self, *_):
        if self.current_model():
            self.settings.set("model", self.current_model())
        self._offer_styles()
        self._offer_model_sizes()
        if self.connected and self.client is not None:
            self.set_status(f"ready \u2014 {self.client.base}, {self._model_label()}", ready=True)

    @guarded
    def _style_edited(self, text):
        self.settings.set("style", text.strip())

    @guarded
    def _seed_edited(self, *_):
        if self.seed.text().strip():
            self.settings.set("seed", self.seed.text().strip())

    @guarded
    def _seed_lock_toggled(self, on):
        self.seed_lock.setText("Locked" if on else "Lock")
        self.settings.set("seed_locked", bool(on))

    @guarded
    def randomise_seed(self, *_):
        self.seed.setText(str(random_seed()))
        self.settings.set("seed", self.seed.text())
        self._prompt_edited()

    @guarded
    def _count_changed(self, value):
        self.settings.set("count", int(value))

    @guarded
    def _size_changed(self, *_):
        self.size_picked = True  # the user's choice from now on, not the canvas's
        self.settings.set("size", int(self.size.currentData() or 0))

    @guarded
    def _truncation_changed(self, value):
        self.truncation_label.setText(f"{value / 100:.2f}")
        self.settings.set("truncation", f"{value / 100:.2f}")
        self._prompt_edited()

    @guarded
    def _fit_changed(self, *_):
        self.settings.set("fit", self.fit.currentData() or "inside")

    @guarded
    def _scaling_changed(self, *_):
        self.settings.set("scaling", self.scaling.currentData() or "smooth")

    @guarded
    def _options_toggled(self, on):
        self.settings.set("options_open", bool(on))

    @guarded
    def _command_edited(self, *_):
        """Only a command the user typed is stored; an empty field goes back to the recorded one."""
        text = self.server_command.text().strip()
        if not self.server_command.isModified():
            return
        self.server_command.setModified(False)
        self.settings.set("server_command", text)
        if not text:
            self.server_command.setText(self.settings.server_command())

    @guarded
    def _api_key_edited(self, *_):
        self.settings.set("api_key", self.api_key.text())
        self.reconnect()


def _render(request):
    """canvas.render on the image thread, its expected failures said as the docker says errors."""
    try:
        return canvas.render(request)
    except CanvasError as exc:
        raise ClientError("canvas", str(exc)) from None
