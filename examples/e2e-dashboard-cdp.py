#!/usr/bin/env python3
"""Loads a page in headless Chromium over the DevTools protocol (--remote-debugging-pipe, so
nothing listens on a port) and reports what a person's browser console would show.

    e2e-dashboard-cdp.py CHROMIUM URL DOM_OUT PNG_OUT [WIDTHxHEIGHT]

Writes the page's DOM (after load) to DOM_OUT and a screenshot to PNG_OUT; prints every console
error (uncaught exceptions, console.error/assert, the browser's own error entries such as a
resource that failed to load), one per line prefixed "console error: ". Exits 0 when there were
none, 1 when there were, 2 when the page could not be loaded. Standard library only.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, size):
        self.profile = tempfile.mkdtemp(prefix="ota-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Chromium reads commands from fd 3 and writes answers to fd 4.
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            preexec_fn=fds,
            pass_fds=(3, 4),  # kept open after fds() put the pipes there
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.profile, "chromium.log"), "wb"),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        os.set_blocking(self.from_chrome, True)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def read(self, deadline):
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no message from Chromium in time")
            import select

            r, _, _ = select.select([self.from_chrome], [], [], 0.2)
            if r:
                chunk = os.read(self.from_chrome, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=30):
        want = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            m = self.read(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                del self.events[: i + 1]
                return m
        while True:
            m = self.read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def drain(self, secs):
        """Collects events for `secs` seconds."""
        deadline = time.monotonic() + secs
        try:
            while True:
                self.events.append(self.read(deadline))
        except TimeoutError:
            pass

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.profile], check=False)


def console_errors(events):
    out = []
    for m in events:
        method, p = m.get("method"), m.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            out.append(f"uncaught: {text} ({d.get('url', '')}:{d.get('lineNumber', '')})")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            out.append(f"{e.get('source', '')}: {e.get('text', '')} {e.get('url', '')}".strip())
    return out


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    chromium, url, dom_out, png_out = sys.argv[1:5]
    size = tuple(int(x) for x in (sys.argv[5] if len(sys.argv) > 5 else "1280x1600").split("x"))
    b = Browser(chromium, size)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.call(f"{domain}.enable", session=s)
        b.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            session=s,
        )
        nav = b.call("Page.navigate", {"url": url}, session=s)
        if nav.get("errorText"):
            print(f"cannot load {url}: {nav['errorText']}", file=sys.stderr)
            return 2
        b.wait_for("Page.loadEventFired")
        b.drain(1.0)  # late errors: timers, failed subresources
        status = [
            m["params"]["response"]["status"]
            for m in b.events
            if m.get("method") == "Network.responseReceived" and m["params"].get("type") == "Document"
        ]
        dom = b.call(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            session=s,
        )["result"]["value"]
        with open(dom_out, "w") as f:
            f.write(dom)
        shot = b.call("Page.captureScreenshot", {"format": "png"}, session=s)["data"]
        with open(png_out, "wb") as f:
            f.write(base64.b64decode(shot))
        errors = console_errors(b.events)
    finally:
        b.close()
    print(f"document status: {' -> '.join(map(str, status)) or 'none'}")
    for e in errors:
        print("console error: " + " | ".join(e.splitlines()))
    if status and status[-1] != 200:
        print(f"the page answered {status[-1]}", file=sys.stderr)
        return 2
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
