"""Headless Chromium (Debian's package) driven by Playwright, for the browser tests, and the page-side
probes they inject.

Playwright's own browser downloads are never used: the system Chromium (``DH_CHROMIUM`` or the
usual Debian paths) is launched with a fresh profile, no network services of its own, sound
allowed without a click, and real host IP candidates for WebRTC (no mDNS names), so a connection on
loopback works the same on every machine. A missing Chromium fails the test with how to install it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns", "--mute-audio"]


def chromium_path() -> str:
    env = os.environ.get("DH_CHROMIUM", "").strip()
    for c in ([env] if env else []) + list(CANDIDATES):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail("no Chromium found: install Debian's 'chromium' package (scripts/setup_env.sh does) or set DH_CHROMIUM")


@contextlib.contextmanager
def browser_page(**context_kw):
    """A Playwright page in a fresh headless Chromium; yields ``(page, log)`` where ``log`` collects
    console messages, page errors and every request URL."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="dh-chromium-")
    log = {"console": [], "errors": [], "requests": []}
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True,
                                                       args=ARGS, **context_kw)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("console", lambda m: log["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log["errors"].append(f"{e}\n{getattr(e, 'stack', '')}"))
            page.on("request", lambda r: log["requests"].append(r.url))
            try:
                yield page, log
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# A probe of the <video> the page plays, independent of the panel's own detector: on every shown
# frame (requestVideoFrameCallback) the picture is sampled at 32x32 and compared with the frame
# shown when the probe was (re)armed; window.__dhProbe.frames holds [t, largest cell change] pairs
# (0-255: a redrawn mouth changes some cells by tens of levels, VP8's refinement of a still picture
# by a few).
PROBE = """
(() => {
  const v = document.querySelector('video');
  const c = document.createElement('canvas'); c.width = 32; c.height = 32;
  const g = c.getContext('2d', {willReadFrequently: true});
  const P = window.__dhProbe = {frames: [], ref: null, count: 0, arm() { this.ref = null; this.frames = []; }};
  const sample = () => { if (!v.videoWidth) return null; g.drawImage(v, 0, 0, 32, 32); return g.getImageData(0, 0, 32, 32).data; };
  const step = () => { const px = sample(); P.count++;
    if (px) { if (!P.ref) P.ref = px; let m = 0;
      for (let i = 0; i < px.length; i += 4) {
        const d = (Math.abs(px[i] - P.ref[i]) + Math.abs(px[i+1] - P.ref[i+1]) + Math.abs(px[i+2] - P.ref[i+2])) / 3;
        if (d > m) m = d; }
      P.frames.push([performance.now(), m]); }
    v.requestVideoFrameCallback(step); };
  v.requestVideoFrameCallback(step);
})();
"""
