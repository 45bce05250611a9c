"""A small Chrome DevTools Protocol client for the report tests: headless Chromium with every
request outside one folder failed (and logged), console errors and page exceptions
collected, a fixed window size, JavaScript evaluation and screenshots.

``python tests/cdp.py SITE OUT`` writes the report's first screen (1,280 × 800) and one
drill-down as PNGs into OUT (the screenshots in docs/)."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over CDP. Requests to URLs not under ``allowed`` (a file://
    prefix) are failed and recorded in ``outside``; console errors, failed loads and page
    exceptions are recorded in ``errors``."""

    def __init__(self, allowed: str, width: int = 1280, height: int = 800):
        self.allowed, self.outside, self.errors = allowed, [], []
        self.profile = tempfile.mkdtemp(prefix="depsim-cdp-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self._id = 0
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Fetch.enable", patterns=[{"urlPattern": "*"}])
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Fetch.requestPaused":
            url = p["request"]["url"]
            if url.startswith(self.allowed) or url.startswith("data:"):
                self._send("Fetch.continueRequest", requestId=p["requestId"])
            else:
                self.outside.append(url)
                self._send("Fetch.failRequest", requestId=p["requestId"], errorReason="BlockedByClient")
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(p["exceptionDetails"])[:300])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + json.dumps(p.get("args"))[:300])
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append("log: " + p["entry"].get("text", "")[:300])

    def _send(self, method: str, **params) -> int:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        return self._id

    def call(self, method: str, **params) -> dict:
        """Send a CDP command and return its result (handling events meanwhile)."""
        mid = self._send(method, **params)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def load(self, url: str, settle: float = 0.5) -> None:
        """Navigate to ``url`` and wait for its load event, then ``settle`` seconds more."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + 60
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Page.loadEventFired":
                break
            self._event(msg)
        end = time.time() + settle
        self.ws.settimeout(0.1)
        while time.time() < end:
            try:
                self._event(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
        self.ws.settimeout(30)

    def js(self, expression: str):
        """Return the value of a JavaScript expression in the page."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """Write the visible window as a PNG."""
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            shutil.rmtree(self.profile, ignore_errors=True)


#: elements on a page wider than their container: anything past the window's right edge, or
#: a box whose content overflows it (clipped or scrolled)
OVERFLOW_JS = """(() => {
  const W = document.documentElement.clientWidth, bad = [];
  for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const name = e.tagName + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : '');
    if (r.right > W + 1) bad.push(name + ' right=' + Math.round(r.right));
    else if (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0 && getComputedStyle(e).overflowX !== 'visible')
      bad.push(name + ' scrolls ' + e.scrollWidth + '>' + e.clientWidth);
  }
  return bad.concat(document.documentElement.scrollWidth > W + 1 ? ['page scrolls sideways'] : []);
})()"""


def screenshots(site: Path, out: Path) -> list[Path]:
    """Write the summary's first screen and the first drill-down section (1,280 × 800)."""
    b = Browser(site.resolve().as_uri())
    try:
        b.load((site / "index.html").resolve().as_uri())
        first = out / "report-summary-1280x800.png"
        b.screenshot(first)
        href = b.js("document.querySelector('table.depsim-decision a').getAttribute('href')")
        b.load((site / href.split("#")[0]).resolve().as_uri() + "#" + href.split("#")[1])
        b.js(f"document.getElementById({json.dumps(href.split('#')[1])}).scrollIntoView()")
        drill = out / "report-drilldown-1280x800.png"
        b.screenshot(drill)
        return [first, drill]
    finally:
        b.close()


if __name__ == "__main__":
    print(*screenshots(Path(sys.argv[1]), Path(sys.argv[2])), sep="\n")
