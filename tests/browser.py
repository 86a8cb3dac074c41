"""A real browser for end-to-end tests: Debian's Chromium (scripts/setup.sh installs it),
driven by Playwright. The registries do not serve browser downloads, so Playwright drives
the installed binary; the flags keep Chromium from calling home (this network is closed)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Playwright, Request

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # root in CI; the page under test is our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def launch(playwright: Playwright, *flags: str) -> Browser:
    """Headless Chromium with FLAGS and any more given."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *flags])


@dataclass
class PageWatch:
    """Everything a page did that a test may forbid: console errors, uncaught exceptions,
    dialogs (alert, confirm, prompt) and requests to any origin but the server's."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._dialog)
        page.on("request", self._request)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def expect_console(self, pattern: str) -> None:
        """A console error the test causes on purpose (Chromium logs every 4xx it loads)."""
        self.expected.append(re.compile(pattern))

    def foreign_requests(self) -> list[str]:
        """Requests to anywhere but the server (blob: downloads are the page's own)."""
        own = urlsplit(self.origin)
        return [
            url
            for url in self.requests
            if not url.startswith("blob:")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    def unexpected_console_errors(self) -> list[str]:
        return [m for m in self.console_errors if not any(p.search(m) for p in self.expected)]

    def check(self) -> None:
        """Nothing happened that should not have."""
        assert self.page_errors == [], f"uncaught in the page: {self.page_errors}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.foreign_requests() == [], f"other origins: {self.foreign_requests()}"
        unexpected = self.unexpected_console_errors()
        assert unexpected == [], f"console errors: {unexpected}"
