"""One live browser on MiniWoB++ task pages: reset to (task, seed), act, snapshot.

The task pages are the ones inside the ``miniwob`` wheel (``miniwob/html/miniwob/*.html``).
A reset loads the task's page (unless it is already loaded and ``reload`` is "task"), lifts
the page's 10 s episode timer (``core.EPISODE_MAX_TIME``: slow model steps would otherwise end
the episode with -1), turns jQuery animations off (so a snapshot never sees a half-open
widget), seeds ``Math.random`` with the task's seed and starts the episode. The same seed
gives the same page, so a state is (task, seed, action prefix). Rewards are the task's raw
reward (``WOB_RAW_REWARD_GLOBAL``), not MiniWoB's default one discounted by elapsed time.

A ``MiniWoBPage`` is used by one thread at a time (``ReplayPool`` guarantees it); it starts
its browser on first use and again after the browser died.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcts_agent.envs.web.actions import Action, ActionError, parse_action
from mcts_agent.envs.web.browser import Browser
from mcts_agent.envs.web.dom import REF_ATTR, RESET_REFS_JS, SNAPSHOT_JS, Snapshot
from mcts_agent.errors import EnvError

EPISODE_MAX_TIME_MS = 1_000_000_000  # ~11.6 days: below setTimeout's 2**31-1 ms limit, above any search
RELOADS = ("task", "always")
_KEY_NAMES = {"Enter": "ENTER", "Tab": "TAB", "Escape": "ESCAPE", "Backspace": "BACKSPACE", "Delete": "DELETE",
              "Space": "SPACE", "ArrowUp": "ARROW_UP", "ArrowDown": "ARROW_DOWN", "ArrowLeft": "ARROW_LEFT",
              "ArrowRight": "ARROW_RIGHT", "Home": "HOME", "End": "END", "PageUp": "PAGE_UP", "PageDown": "PAGE_DOWN"}
_TEXT_INPUTS = {"text", "password", "email", "number", "search", "tel", "url", "date", "time"}

START_JS = f"""
core.EPISODE_MAX_TIME = {EPISODE_MAX_TIME_MS};
if (window.jQuery) jQuery.fx.off = true;
{RESET_REFS_JS}
if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
Math.seedrandom(arguments[0]);
core.startEpisodeReal();
return typeof WOB_TASK_READY === 'undefined' ? true : !!WOB_TASK_READY;
"""


def html_root() -> Path:
    """The ``html`` folder of the installed ``miniwob`` wheel (served as the site root)."""
    try:
        import miniwob
    except ImportError as e:
        raise EnvError("MiniWoB++ needs the miniwob package: pip install -e '.[web]'") from e
    return Path(miniwob.__file__).parent / "html"


def task_names() -> list[str]:
    """Every MiniWoB++ task page in the wheel (``click-button``, ...), sorted."""
    return sorted(p.stem for p in (html_root() / "miniwob").glob("*.html"))


@dataclass(frozen=True)
class PageResult:
    """The page after a reset or an action: its snapshot, and the action's error if it failed."""

    snapshot: Snapshot
    error: str | None = None

    @property
    def hash(self) -> str:
        return self.snapshot.hash()


def fingerprint(result: PageResult) -> str:
    """What replay compares (``ReplayPool(fingerprint=...)``): the page's hash."""
    return result.hash


class MiniWoBPage:
    """A browser that resets to ``(task, seed)`` keys and takes parsed actions."""

    def __init__(self, base_url: str, *, chrome_binary: str | None = None, chromedriver: str | None = None,
                 reload: str = "task", settle: float = 0.0) -> None:
        if reload not in RELOADS:
            raise EnvError(f"reload must be one of {list(RELOADS)}, got {reload!r}")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.chrome_binary, self.chromedriver = chrome_binary, chromedriver
        self.reload, self.settle = reload, settle
        self.browser: Browser | None = None
        self.loaded: str | None = None
        self.last: Snapshot | None = None

    def _driver(self) -> Any:
        if self.browser is None or not self.browser.alive:
            self.browser = Browser(self.chrome_binary, self.chromedriver)
            self.loaded = None
        return self.browser.driver

    def reset(self, key: tuple[str, int]) -> PageResult:
        """Start task ``key = (name, seed)``; the result shows its first page."""
        name, seed = key
        driver = self._driver()
        try:
            if self.loaded != name or self.reload == "always":
                self.loaded = None
                driver.get(f"{self.base_url}miniwob/{name}.html")
                self.loaded = name
            ready = driver.execute_script(START_JS, int(seed))
            for _ in range(40):  # tasks that build their page asynchronously say when they are ready
                if ready:
                    break
                time.sleep(0.05)
                ready = driver.execute_script("return !!WOB_TASK_READY;")
            else:
                raise EnvError(f"MiniWoB task {name!r} (seed {seed}) did not become ready in 2 s")
            return PageResult(self.snapshot())
        except EnvError:
            raise
        except Exception as e:
            self.close()  # an unknown browser state: start a new one next time
            raise EnvError(f"browser failed on reset to {name!r} seed {seed}: {type(e).__name__}: {e}") from e

    def snapshot(self) -> Snapshot:
        self.last = Snapshot.from_js(self._driver().execute_script(SNAPSHOT_JS))
        return self.last

    def step(self, action: str) -> PageResult:
        """Take ``action`` (text in ``actions``' language); a bad one leaves the page as it was."""
        if self.last is None:
            raise EnvError("MiniWoBPage.step before reset")
        try:
            parsed = parse_action(action)
        except ActionError as e:
            return PageResult(self.last, str(e))
        if self.last.done:
            return PageResult(self.last, "the episode is over; no action has an effect")
        if parsed.ref is not None and parsed.ref not in self.last.refs():
            return PageResult(self.last, f"no element [{parsed.ref}] in the latest page; use a ref shown in brackets")
        try:
            error = self._perform(parsed)
            if self.settle:
                time.sleep(self.settle)
            return PageResult(self.snapshot(), error)
        except Exception as e:
            self.close()
            raise EnvError(f"browser failed on {action.strip()[:80]!r}: {type(e).__name__}: {e}") from e

    def _perform(self, a: Action) -> str | None:
        from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                                NoSuchElementException)
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select

        driver = self._driver()
        if a.kind == "press":
            key = getattr(Keys, _KEY_NAMES[a.text or ""])
            ActionChains(driver).send_keys(key).perform()
            return None
        found = driver.find_elements(By.CSS_SELECTOR, f'[{REF_ATTR}="{a.ref}"]')
        if not found:
            return f"element [{a.ref}] is no longer on the page"
        el = found[0]
        tag = el.tag_name.lower()
        if a.kind == "click":
            try:
                el.click()
            except (ElementClickInterceptedException, ElementNotInteractableException):
                driver.execute_script("arguments[0].click();", el)  # covered or off-screen: the page's own click
            return None
        if a.kind == "type":
            kind = (el.get_attribute("type") or "text").lower()
            if tag not in ("input", "textarea") or (tag == "input" and kind not in _TEXT_INPUTS):
                return f"type() needs a text input or textarea; [{a.ref}] is a {tag}" + (
                    f" of type {kind}" if tag == "input" else "")
            try:
                el.clear()
                el.send_keys(a.text or "")
            except ElementNotInteractableException:
                return f"[{a.ref}] cannot be typed into (it is hidden or disabled)"
            return None
        if tag != "select":  # a.kind == "select"
            return f'select() needs a select list; [{a.ref}] is a {tag}: use click({a.ref}) or type({a.ref}, "...")'
        sel = Select(el)
        try:
            sel.select_by_visible_text(a.text or "")
        except NoSuchElementException:
            options = [o.text for o in sel.options][:20]
            return f"[{a.ref}] has no option {a.text!r}; its options are {options}"
        return None

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        self.browser, self.loaded, self.last = None, None, None
