"""Drive Debian's headless Chromium through the DevTools protocol over a pipe (no extra packages).

`--dump-dom` with `--virtual-time-budget` cannot wait for LiteRT.js: its
timers let virtual time run out while an image decodes off the main thread,
so the DOM is dumped before the page has a result. Over
`--remote-debugging-pipe` the test instead polls the page in real time.
"""

import base64
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


class Chromium:
    """One headless Chromium; `page_text(url, element_id)` waits for an element's text."""

    def __init__(self):
        self.profile = tempfile.TemporaryDirectory(prefix="mmkeras-chromium-")
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()
        # The child's ends above fd 4: one of them on fd 3 or 4 would be closed by the other's dup2 before it moved.
        commands_read, replies_write = (self._above_four(fd) for fd in (commands_read, replies_write))
        self.process = subprocess.Popen(
            [find_chromium(), *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            # dup2 makes fds 3 and 4 inheritable; every other descriptor Python opened is close-on-exec. (pass_fds
            # would mark 3 and 4 inheritable before preexec_fn runs: EBADF when the parent has them closed.)
            close_fds=False,
            preexec_fn=lambda: (os.dup2(commands_read, 3), os.dup2(replies_write, 4)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self.buffer = b""
        self.next_id = 0

    @staticmethod
    def _above_four(fd: int) -> int:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
        os.close(fd)
        return moved

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.replies, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def page_text(self, url: str, element_id: str, timeout: float = 120.0) -> str:
        """Open `url` in a new tab and return the text of `element_id` once it is not empty."""
        return self.page_state(url, element_id, timeout=timeout)[0]

    def page_state(self, url: str, element_id: str, *, evaluate: str = "null", screenshot: str | None = None,
                   size: tuple[int, int] = (1200, 800), timeout: float = 120.0) -> tuple[str, object]:
        """Open `url` in a tab of `size` (width, height) and, once `element_id` has text, return that text and the
        value of the JavaScript expression `evaluate` (a promise's, once it settles); with `screenshot`, also save
        the page as that PNG file (after `evaluate`)."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", session, width=size[0], height=size[1],
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session, url=url)
        expression = f"(document.getElementById({json.dumps(element_id)}) || {{}}).textContent || ''"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                value = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
                text = value["result"].get("value", "")
                if text:
                    time.sleep(0.3)  # the preview image decodes after the result is written
                    state = self.send("Runtime.evaluate", session, expression=evaluate, returnByValue=True,
                                      awaitPromise=True)
                    if screenshot:
                        png = self.send("Page.captureScreenshot", session, format="png")["data"]
                        with open(screenshot, "wb") as file:
                            file.write(base64.b64decode(png))
                    return text, state["result"].get("value")
                time.sleep(0.2)
            raise TimeoutError(f"no #{element_id} text within {timeout} s at {url}")
        finally:
            self.send("Target.closeTarget", targetId=target)

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self.commands)
        os.close(self.replies)
        self.profile.cleanup()


def served_page_text(folder, page: str, element_id: str, timeout: float = 120.0) -> str:
    """Serve `folder` over HTTP on loopback, open `page` there in a fresh Chromium, and return `element_id`'s text."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Chromium()
    try:
        return browser.page_text(f"http://127.0.0.1:{server.server_port}/{page}", element_id, timeout)
    finally:
        browser.close()
        server.shutdown()
