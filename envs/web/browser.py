"""Headless chromium through Selenium, and the local HTTP server of the task pages: their whole lifecycle.

``Browser`` starts the system ``chromedriver`` (never one Selenium Manager would download:
the driver path goes in a ``Service``) with the system ``chromium``, in a process group and
a private profile folder of its own (also its ``HOME``, so its crash handler is ours to
find). ``PageServer`` serves a folder on ``127.0.0.1`` from a thread.

Both are stopped by ``close()``, when collected, at interpreter exit and on SIGTERM/SIGHUP
(``mcts_agent.lifecycle``). A process killed with SIGKILL runs none of these: the next browser started on
the machine sweeps what it left (``sweep_orphans``: profile folders name their process). Ctrl-C raises ``KeyboardInterrupt`` as usual; the driver runs in its own
session, so the terminal's SIGINT does not kill it under the unwinding code, which closes it.

Paths: constructor arguments, else ``MINIWOB_CHROME_BINARY`` / ``MINIWOB_CHROMEDRIVER``, else
``/usr/bin/chromium`` / ``/usr/bin/chromedriver`` (``scripts/install_system_deps.sh``).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mcts_agent.errors import EnvError
from mcts_agent.lifecycle import Registry, pid_alive

DEFAULT_CHROME = "/usr/bin/chromium"
DEFAULT_DRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-breakpad", "--mute-audio",
         "--disable-features=Translate,OptimizationHints,MediaRouter", "--window-size=800,600")
INSTALL_HINT = "install them with scripts/install_system_deps.sh (apt-get install chromium chromium-driver)"

PROFILE_PREFIX = "mcts-agent-chromium-"  # + the starting process's pid + "-" + a random part
OWNER_FILE = "driver-pgid"
LIVE = Registry("browser")  # every open browser and server of this process


def resolve_paths(chrome_binary: str | None = None, chromedriver: str | None = None) -> tuple[str, str]:
    """The chromium binary and chromedriver to use (argument, else env var, else the Debian path), checked."""
    chrome = chrome_binary or os.environ.get("MINIWOB_CHROME_BINARY") or DEFAULT_CHROME
    driver = chromedriver or os.environ.get("MINIWOB_CHROMEDRIVER") or DEFAULT_DRIVER
    for what, path in (("chromium binary", chrome), ("chromedriver", driver)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise EnvError(f"{what} {path!r} is not an executable file; pass its path, set "
                           f"MINIWOB_CHROME_BINARY / MINIWOB_CHROMEDRIVER, or {INSTALL_HINT}")
    return chrome, driver


def browser_available() -> str | None:
    """None when chromium, chromedriver and selenium are all usable here, else why not (for test skips)."""
    try:
        resolve_paths()
        import selenium  # noqa: F401
    except (EnvError, ImportError) as e:
        return str(e)
    return None


def close_all() -> None:
    """Stop every browser and server this process started and has not closed."""
    LIVE.close_all()


def _matching_pids(pgid: int | None, marker: str) -> list[int]:
    """Live processes in process group ``pgid`` or whose command line mentions ``marker``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            state, _, pg = stat[stat.rindex(")") + 2:].split()[:3]
            if state in "ZX":
                continue
            if (pgid is not None and int(pg) == pgid) or marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace"):
                out.append(pid)
        except (OSError, ValueError):
            continue
    return out


def sweep_orphans(root: str | None = None) -> int:
    """Stop the browsers of processes that died without closing them (kill -9, a crashed Ray worker).

    Each profile folder is named after the process that started it and records its driver's
    process group; a folder whose process is gone has its driver group and chromium killed and
    is removed. Called whenever a browser starts; returns how many folders were swept."""
    swept = 0
    base = Path(root or tempfile.gettempdir())
    for folder in base.glob(f"{PROFILE_PREFIX}*-*"):
        owner = folder.name[len(PROFILE_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or pid_alive(int(owner)):
            continue
        try:
            pgid = int(Path(folder, OWNER_FILE).read_text())
        except (OSError, ValueError):
            pgid = -1  # died while starting: only chromium (by its profile) can be found
        for pid in _matching_pids(pgid if pgid > 0 else None, str(folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(folder, ignore_errors=True)
        swept += 1
    return swept


def _shutdown_browser(driver: Any, pgid: int, profile: str) -> None:
    try:
        driver.quit()  # closes the session and stops chromedriver (terminate, then kill)
    except Exception:  # noqa: BLE001 - a dead or wedged browser is killed below
        pass
    for pid in [*(_matching_pids(pgid, profile))]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """One headless chromium driven by the system chromedriver."""

    def __init__(self, chrome_binary: str | None = None, chromedriver: str | None = None, *,
                 flags: tuple[str, ...] = FLAGS, page_load_timeout: float = 30.0) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.chrome_binary, self.chromedriver = resolve_paths(chrome_binary, chromedriver)
        sweep_orphans()
        self.profile = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-")
        options = webdriver.ChromeOptions()
        options.binary_location = self.chrome_binary
        for flag in (*flags, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        env = {**os.environ, "HOME": self.profile, "XDG_CONFIG_HOME": os.path.join(self.profile, ".config")}
        service = Service(executable_path=self.chromedriver, env=env, popen_kw={"start_new_session": True})
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except Exception as e:
            pgid = service.process.pid if getattr(service, "process", None) else None
            _shutdown_browser(_NoDriver(service), pgid or -1, self.profile)
            raise EnvError(f"could not start {self.chrome_binary} through {self.chromedriver}: "
                           f"{type(e).__name__}: {str(e).strip()[:500]}") from e
        self.driver.set_page_load_timeout(page_load_timeout)
        self.pgid = service.process.pid  # start_new_session: the driver leads its own group
        Path(self.profile, OWNER_FILE).write_text(str(self.pgid))  # for sweep_orphans, if this process is killed
        self._finalizer = LIVE.track(self, functools.partial(_shutdown_browser, self.driver, self.pgid, self.profile))

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def pids(self) -> list[int]:
        """Live processes of this browser: chromedriver, chromium and its helpers."""
        return _matching_pids(self.pgid, self.profile) if self.alive else []

    def close(self) -> None:
        """Quit the browser and kill whatever of it remains (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoDriver:
    """Stands in for a driver that never started: stops its service."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def quit(self) -> None:
        self.service.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class names it format
        pass


class PageServer:
    """Serves ``root`` on ``http://127.0.0.1:<free port>/`` from a daemon thread until ``close()``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        if not os.path.isdir(self.root):
            raise EnvError(f"page folder {self.root!r} does not exist")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=self.root))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"miniwob-http-{self.port}", daemon=True)
        self._thread.start()
        self._finalizer = LIVE.track(self, functools.partial(_stop_server, self.httpd, self._thread))

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def close(self) -> None:
        self._finalizer()


def _stop_server(httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
