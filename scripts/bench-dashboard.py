#!/usr/bin/env python3
"""The web dashboard's cost, measured with a real browser against a real daemon.

32 chips and 100 reporting processes (`ttmem bench load-worker`, 20 events/s each) on a daemon
of its own; then
  - page ready: from navigation start to the page showing all 32 chips live (the browser's own
    Performance API clock), median of 5 loads;
  - daemon CPU: the daemon's share of a core over --seconds with no dashboard, then with five
    dashboards open, side by side in one run;
  - the same two through a peer: a second daemon whose config names the first in [[peers]]
    (docs/deploy.md), its page showing the first host's 32 chips live, and that front daemon's
    CPU with five such pages open (it forwards their streams) next to none.

Usage: cargo build --release && scripts/bench-dashboard.py [--seconds 60] [--ttmem PATH]
Needs Debian's chromium (scripts/setup.sh installs it). Standard library only.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else "chromium"


class Browser:
    """Headless Chromium over the DevTools pipe (fd 3 in, fd 4 out)."""

    def __init__(self):
        r1, self.w = os.pipe()
        self.r, w2 = os.pipe()
        os.set_inheritable(r1, True)
        os.set_inheritable(w2, True)

        def fds():
            os.dup2(r1, 3)
            os.dup2(w2, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--user-data-dir=" + tempfile.mkdtemp(prefix="ttmem-bench-chrome-"), "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r1)
        os.close(w2)
        self.buf = b""
        self.n = 0

    def call(self, method, params=None, session=None):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium went away")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            v = json.loads(raw)
            if v.get("id") == self.n:
                if "error" in v:
                    raise RuntimeError(f"{method}: {v['error']}")
                return v.get("result", {})

    def page(self):
        t = self.call("Target.createTarget", {"url": "about:blank"})
        return self.call("Target.attachToTarget", {"targetId": t["targetId"], "flatten": True})["sessionId"]

    def eval(self, session, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
        return r.get("result", {}).get("value")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def wait_health(base):
    """Waits up to 10 s for a daemon's API to answer."""
    for _ in range(100):
        try:
            return get(base + "/api/v1/health")
        except OSError:
            time.sleep(0.1)
    sys.exit(f"no daemon answered at {base}")


def wait_ready(browser, url, ready_js, what):
    """Loads `url` in 5 new pages; returns each one's ready time (ms, the page's own clock)."""
    ready = []
    for _ in range(5):
        s = browser.page()
        browser.call("Page.navigate", {"url": url}, s)
        deadline = time.time() + 30
        while True:
            v = browser.eval(s, f"({ready_js}) && performance.now()")
            if v:
                ready.append(v)
                break
            if time.time() > deadline:
                sys.exit(f"the page never showed {what}")
            time.sleep(0.01)
    return ready


def close_pages(browser):
    for t in browser.call("Target.getTargets")["targetInfos"]:
        if t["type"] == "page":
            browser.call("Target.closeTarget", {"targetId": t["targetId"]})


def open_pages(browser, url):
    for _ in range(5):
        s = browser.page()
        browser.call("Page.navigate", {"url": url}, s)
    time.sleep(2)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--ttmem", default="target/release/ttmem")
    a = ap.parse_args()
    if not os.path.exists(a.ttmem):
        sys.exit(f"{a.ttmem} is missing: cargo build --release first")
    tmp = tempfile.mkdtemp(prefix="ttmem-bench-dashboard-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = subprocess.Popen(
        [a.ttmem, "serve", "--no-legacy-socket", "--no-tt-metal", "--dir", f"{tmp}/regions",
         "--api-socket", f"{tmp}/api.sock", "--db", f"{tmp}/db", "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    daemons = [daemon]
    browser = None
    try:
        wait_health(base)
        run_s = str(int(a.seconds * 2 + 120))
        # The writers take their region directory from TTMEM_DIR, as every client does.
        env = {**os.environ, "TTMEM_DIR": f"{tmp}/regions"}
        for i in range(100):
            workers.append(subprocess.Popen(
                [a.ttmem, "bench", "load-worker", "--rate", "20", "--seconds", run_s, "--index", str(i % 32)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while True:
            snap = get(base + "/api/v1/snapshot?detail=totals")
            if len(snap["devices"]) == 32 and sum(p["state"] == "running" for p in snap["processes"]) == 100:
                break
            if time.time() > deadline:
                sys.exit(f"never saw 32 chips and 100 processes: {len(snap['devices'])}, {len(snap['processes'])}")
            time.sleep(0.2)

        browser = Browser()
        ready = wait_ready(browser, base + "/", "document.querySelectorAll('[data-device]').length === 32 && "
                           "document.querySelector('#status').textContent === 'live'", "32 chips live")
        print(f"page ready (32 chips, 100 processes): median {statistics.median(ready):.0f} ms "
              f"(loads: {', '.join(f'{x:.0f}' for x in ready)})")

        def share(seconds, pid=daemon.pid):
            c0, t0 = cpu_seconds(pid), time.time()
            time.sleep(seconds)
            return 100 * (cpu_seconds(pid) - c0) / (time.time() - t0)

        # The five test pages above stay open; close them for the baseline.
        close_pages(browser)
        idle = share(a.seconds)
        open_pages(browser, base + "/")
        watched = share(a.seconds)
        print(f"daemon CPU over {a.seconds:.0f} s: {idle:.2f} % of a core with no dashboard, "
              f"{watched:.2f} % with five open (+{watched - idle:.2f} %)")

        # Through a peer: a front daemon names this one, and its pages follow it.
        close_pages(browser)
        front_port = free_port()
        front_base = f"http://127.0.0.1:{front_port}"
        with open(f"{tmp}/front.toml", "w") as f:
            f.write(f'[[peers]]\nname = "bench"\nurl = "{base}"\n')
        front = subprocess.Popen(
            [a.ttmem, "serve", "--config", f"{tmp}/front.toml", "--no-legacy-socket", "--no-tt-metal",
             "--dir", f"{tmp}/front-regions", "--api-socket", f"{tmp}/front.sock", "--db", f"{tmp}/front.db",
             "--http", f"127.0.0.1:{front_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemons.append(front)
        wait_health(front_base)
        ready = wait_ready(browser, front_base + "/",
                           "document.querySelectorAll('[data-peer=bench] [data-peer-device]').length === 32 && "
                           "document.querySelector('[data-peer=bench] h3 .badge').textContent === 'live'",
                           "the peer's 32 chips live")
        print(f"through a peer, page ready (32 chips, 100 processes): median {statistics.median(ready):.0f} ms "
              f"(loads: {', '.join(f'{x:.0f}' for x in ready)})")
        close_pages(browser)
        idle = share(a.seconds, front.pid)
        open_pages(browser, front_base + "/")
        watched = share(a.seconds, front.pid)
        print(f"front daemon CPU over {a.seconds:.0f} s: {idle:.2f} % of a core with no dashboard, "
              f"{watched:.2f} % with five following the peer (+{watched - idle:.2f} %)")
    finally:
        if browser:
            browser.close()
        for w in workers:
            w.kill()
        for w in workers:
            w.wait()
        for d in daemons:
            d.terminate()
        for d in daemons:
            d.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
