"""Start and stop a real ComfyUI server with this pack loaded, for tests, the runner, batch runs
and the MCP server (when no ComfyUI answers at the address they were given).

The pack is made visible to ComfyUI through an ``extra_model_paths`` file whose
``custom_nodes`` entry points at a temporary folder holding a link to this checkout, so the
ComfyUI tree itself is never modified. Input, output and temp folders are given on the command
line, so a test server writes nothing into the ComfyUI tree either.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_LINK_NAME = "ComfyUI-DigitalHuman"


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """Locate a ComfyUI checkout: argument, ``COMFYUI_PATH``, the one this pack is installed in,
    or the copy that ``scripts/setup_env.sh`` prepares in ``.cache/comfyui``."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(PACK_ROOT.parent.parent)
    candidates.append(PACK_ROOT / ".cache" / "comfyui")
    for c in candidates:
        if (c / "main.py").is_file() and (c / "nodes.py").is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no ComfyUI found (tried: {tried}). Set COMFYUI_PATH to a ComfyUI checkout, or run "
        "'bash scripts/setup_env.sh' to prepare one in .cache/comfyui."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_alive(url: str, timeout: float = 2.0) -> bool:
    """True when a ComfyUI answers ``/system_stats`` at ``url``."""
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=timeout) as r:
            json.loads(r.read())
            return r.status == 200
    except (OSError, ValueError, urllib.error.URLError):
        return False


class ComfyServer:
    """A ComfyUI process on loopback with this pack loaded; use as a context manager."""

    def __init__(
        self,
        comfyui: str | os.PathLike | None = None,
        port: int | None = None,
        workdir: str | os.PathLike | None = None,
        python: str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.comfyui = find_comfyui(comfyui)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dh-comfy-"))
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        self.temp_dir = self.workdir / "temp"
        self.log_path = self.workdir / "comfyui.log"
        self.python = python or sys.executable
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def _write_extra_paths(self) -> Path:
        nodes_parent = self.workdir / "custom_nodes"
        nodes_parent.mkdir(parents=True, exist_ok=True)
        link = nodes_parent / PACK_LINK_NAME
        if not link.exists():
            link.symlink_to(PACK_ROOT, target_is_directory=True)
        # Model folders under the work dir too, so tests can place small or placeholder files.
        lines = ["digitalhuman_test:", f"    base_path: {self.workdir}", "    custom_nodes: custom_nodes",
                 "    checkpoints: models/checkpoints", "    vae: models/vae", "    clip: models/clip",
                 "    unet: models/unet"]
        cfg = self.workdir / "extra_model_paths.yaml"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for d in (self.input_dir, self.output_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        cfg = self._write_extra_paths()
        cmd = [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.temp_dir), "--extra-model-paths-config", str(cfg),
            "--disable-auto-launch", *self.extra_args,
        ]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode} while starting:\n{self.log_tail()}")
            if server_alive(self.url, timeout=1.0):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer at {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 20.0) -> None:
        """Terminate the server, killing it when it has not exited after ``grace`` seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        self.proc = None

    def cleanup(self, grace: float = 20.0) -> None:
        self.stop(grace)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def reach_or_start(url: str, comfyui: str | os.PathLike | None = None, start_timeout: float = 300.0,
                   log=print) -> tuple[str, "ComfyServer | None"]:
    """``(url, None)`` when a ComfyUI answers at ``url``; otherwise start one on that port (loopback
    only) and return its url and the server, which the caller stops. A remote address that does not
    answer is an error: nothing can be started there."""
    from urllib.parse import urlparse

    url = url.rstrip("/")
    if server_alive(url):
        return url, None
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConnectionError(f"no ComfyUI answers at {url}, and a server can be started only on this machine")
    log(f"no ComfyUI at {url}; starting one ...")
    server = ComfyServer(comfyui=comfyui, port=parsed.port or 8188)
    server.start(timeout=start_timeout)
    log(f"ComfyUI {server.comfyui} listening at {server.url} (log: {server.log_path})")
    return server.url, server
