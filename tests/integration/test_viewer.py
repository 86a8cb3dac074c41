"""The auditors' viewer in a real browser (Debian's Chromium, driven by Playwright) against the
real stack: nginx and a gunicorn instance from deploy/ over the session's log and worker.

Screenshots of the main views are written to VIEWER_SCREENSHOTS (`make screenshots`:
docs/), else to pytest's temporary directory.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import requests
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright
from sqlalchemy import Engine, create_engine, text

from auditlog.settings import Settings
from tests import factories
from tests.browser import PageWatch, launch
from tests.helpers import WorkerProcess, wait_for
from tests.integration.conftest import PUBLIC_KEY, create_key, wait_stored
from tests.topology import ApiInstance, NginxProcess, free_port

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:8]
SERVICE = f"viewer-{RUN}"  # the 250 events searched, paged, charted and exported
COUNT = 250
TYPES = ["customer.billed", "customer.refunded", "invoice.sent"]
FAILURES = COUNT // 5  # every fifth event is a failure
BIG = "A" * (100 * 1024)
LOG_KEY = base64.b64encode(PUBLIC_KEY).decode()


def hostile_event() -> dict[str, Any]:
    """Markup, script URLs, template syntax, a 100 KiB string, keys and numbers that test the
    canonical form: the page must show all of it as text, and still verify it."""
    return factories.event(
        type="security.probe",
        service=f"{SERVICE}-hostile",
        actor={
            "type": "user",
            "id": "<script>alert(1)</script>",
            "name": "<img src=x onerror=alert(2)>",
        },
        subject={"type": "url", "id": "javascript:alert(3)"},
        action="probe",
        outcome="failure",
        context={"ip": "10.0.0.1", "user_agent": "<svg onload=alert(4)>"},
        data={
            "html": "<b onmouseover=alert(5)>bold</b><iframe src=javascript:alert(6)></iframe>",
            "link": "javascript:alert(document.cookie)",
            "style": "<style>body{display:none}</style>",
            "template": "${alert(7)} {{constructor.constructor('alert(8)')()}}",
            "big": BIG,
            "__proto__": {"polluted": True},
            "\ue000 private-use key": "sorts after every BMP key below U+E000",
            "emoji 😀 key": "\u202e right-to-left, zero\u200bwidth, e\u0301 combining",
            "numbers": [0.1, 1.5e-7, 123456789.125, 2**53 - 1, -(2**53 - 1), 1e21],
            "nested": {"deeper": [[["</script><script>alert(9)</script>"]]]},
            "escapes": 'line 1\nline 2\r\n\t"quoted" \\ backslash \u0007 bell',
        },
    )


@dataclass
class Stack:
    settings: Settings
    nginx: NginxProcess
    admin: str
    reader: str
    writer: str
    owner: Engine
    superuser: Engine
    ids: list[str] = field(default_factory=list)  # the 250, as posted
    victim: str = ""
    hostile: str = ""

    def url(self, fragment: dict[str, str] | None = None) -> str:
        return self.nginx.url("/viewer/") + (f"#{urlencode(fragment)}" if fragment else "")

    def post(self, events: list[dict[str, Any]]) -> list[str]:
        answer = requests.post(
            self.nginx.url("/v1/events"),
            data=orjson.dumps(events),
            headers={"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        return list(answer.json()["ids"])

    def follow_status(self) -> int:
        """The status of a follow stream opened (and closed at once) with the auditor's key:
        503 while the one follower a key may have here is taken."""
        with requests.get(
            self.nginx.url("/v1/events/tail"),
            params={"follow": "true", "service": f"{SERVICE}-probe"},
            headers={"Authorization": f"Bearer {self.reader}"},
            stream=True,
            timeout=10,
        ) as answer:
            return answer.status_code


@pytest.fixture(scope="module")
def stack(settings: Settings, worker: WorkerProcess, logs_dir: Path) -> Iterator[Stack]:
    """nginx and a gunicorn instance as `make run` has them, over the session's log and worker."""
    own = settings.model_copy(
        update={
            # Room for the hostile event's 100 KiB string.
            "max_string_chars": 110_000,
            "max_data_bytes": 200_000,
            "max_event_bytes": 400_000,
            # One follower per key (in the instance's one worker): whether the page's
            # follower is still held is then a 503 or a 200 for the next one.
            "follow_max_per_key": 1,
        }
    )
    with contextlib.ExitStack() as cleanup:
        api = ApiInstance(own, logs_dir, f"viewer-api-{RUN}", workers=1)
        cleanup.callback(api.stop)
        api.start()
        nginx = NginxProcess(own, [api.address, api.address], f"127.0.0.1:{free_port()}", logs_dir)
        cleanup.callback(nginx.remove)
        cleanup.callback(nginx.stop)
        nginx.start()
        owner = create_engine(own.url_for("owner"))
        cleanup.callback(owner.dispose)
        superuser = create_engine(own.admin_url.set(database=own.database_name))
        cleanup.callback(superuser.dispose)
        stack = Stack(
            settings=own,
            nginx=nginx,
            admin=create_key(own, f"viewer-admin-{RUN}", "admin"),
            reader=create_key(own, f"viewer-auditor-{RUN}", "read"),
            writer=create_key(own, f"viewer-producer-{RUN}", "write", SERVICE),
            owner=owner,
            superuser=superuser,
        )
        now = datetime.now(UTC)
        events = [
            factories.event(
                service=SERVICE,
                type=TYPES[i % len(TYPES)],
                outcome="failure" if i % 5 == 0 else "success",
                occurred_at=factories.timestamp(now - timedelta(minutes=1 + i * 4.5)),
            )
            for i in range(COUNT)
        ]
        for start in range(0, COUNT, 50):
            stack.ids += stack.post(events[start : start + 50])
        (stack.victim,) = stack.post([factories.event(service=f"{SERVICE}-victim")])
        (stack.hostile,) = stack.post([hostile_event()])
        wait_stored(owner, [*stack.ids, stack.victim, stack.hostile])
        yield stack


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def watch(stack: Stack) -> PageWatch:
    return PageWatch(origin=stack.nginx.url("/"))


@pytest.fixture
def page(browser: Browser, watch: PageWatch) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); afterwards, nothing it did may be forbidden."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = watch.attach(context.new_page())
    page.set_default_timeout(15_000)
    yield page
    context.close()
    watch.check()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("VIEWER_SCREENSHOTS")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextlib.contextmanager
def tampered(superuser: Engine, event_id: str) -> Iterator[None]:
    """An event's data changed behind the service's back (triggers off, as test_tamper.py
    does), then put back: the session's log is shared."""

    def change(statement: str, params: dict[str, Any]) -> None:
        with superuser.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(statement), params)

    with superuser.connect() as conn:
        original = conn.scalar(
            text("SELECT data::text FROM events WHERE id = :id"), {"id": event_id}
        )
    change(
        "UPDATE events SET data = jsonb_set(data, '{amount}', '1') WHERE id = :id", {"id": event_id}
    )
    try:
        yield
    finally:
        change(
            "UPDATE events SET data = CAST(:d AS jsonb) WHERE id = :id",
            {"d": original, "id": event_id},
        )


def settled(page: Page) -> None:
    """The viewer shows a search's answer and is not waiting for another."""
    page.wait_for_selector("#viewer:not([hidden])")
    page.wait_for_function(
        "() => !document.body.dataset.busy && document.querySelector('#page-info').dataset.page"
    )


def open_viewer(page: Page, stack: Stack, **fragment: str) -> None:
    """Open the viewer as a link handed to an auditor: the token in the fragment."""
    page.goto(stack.url({"token": stack.reader, **fragment}))
    settled(page)


def rows(page: Page) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#events tbody tr[data-id]",
        "rows => rows.map(r => ({id: r.dataset.id, cells: [...r.cells].map(c => c.textContent)}))",
    )


def every_row(page: Page) -> list[dict[str, Any]]:
    """Every row of the search, following Older to the last page."""
    seen = rows(page)
    while page.is_enabled("#older"):
        page.click("#older")
        settled(page)
        seen += rows(page)
    return seen


def chart_total(page: Page) -> int:
    page.wait_for_selector("#chart-total[data-total]")
    return int(page.get_attribute("#chart-total", "data-total") or "-1")


def verify_shown(page: Page, row_id: str) -> tuple[str, str]:
    """Open the event's detail, press Verify; the outcome and the sentence shown."""
    page.click(f'#events tr[data-id="{row_id}"]')
    page.wait_for_selector("#detail:not([hidden])")
    page.click("#verify")
    page.wait_for_selector(
        '#verify-summary[data-outcome="ok"], #verify-summary[data-outcome="failed"]'
    )
    return (
        page.get_attribute("#verify-summary", "data-outcome") or "",
        page.text_content("#verify-summary") or "",
    )


class TestSignIn:
    """A key pasted or a token in the link; kept in the tab's sessionStorage only."""

    def test_with_a_pasted_key(self, page: Page, stack: Stack, watch: PageWatch):
        page.goto(stack.url())
        page.wait_for_selector("#sign-in:not([hidden])")
        watch.expect_console(r"status of 401")
        page.fill("#token", "alk_not-a-key")
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#status.error")
        assert "refused this token" in (page.text_content("#status") or "")
        assert page.is_visible("#sign-in")

        page.fill("#token", stack.reader)
        page.click("#sign-in-form button[type=submit]")
        settled(page)
        assert page.evaluate("sessionStorage.getItem('auditlog.token')") == stack.reader
        assert page.evaluate("localStorage.length") == 0
        assert page.context.cookies() == []

        page.reload()  # the same tab keeps it
        settled(page)
        other = page.context.new_page()  # another tab does not
        other.goto(stack.url())
        other.wait_for_selector("#sign-in:not([hidden])")
        other.close()

        page.click("#sign-out")
        page.wait_for_selector("#sign-in:not([hidden])")
        assert page.evaluate("sessionStorage.length") == 0
        assert rows(page) == []

    def test_with_a_token_in_the_fragment(self, page: Page, stack: Stack, watch: PageWatch):
        open_viewer(page, stack, service=SERVICE)
        assert "token" not in page.url  # taken out of the address bar at once
        assert f"service={SERVICE}" in page.url
        assert {row["cells"][1] for row in rows(page)} == {SERVICE}
        # The token went in Authorization headers only: in no URL, so in no access log.
        assert not [url for url in watch.requests if stack.reader in url]
        assert not [line for line in stack.nginx.access_lines() if stack.reader in str(line)]

    def test_an_error_names_nginx_request_id(self, page: Page, stack: Stack, watch: PageWatch):
        """A key that may not read: the page says why, with the id nginx gave the request
        (the one every log line of it carries); the page sends no request id of its own."""
        watch.expect_console(r"status of 403")
        page.goto(stack.url({"token": stack.writer}))
        page.wait_for_selector("#status.error")
        shown = page.text_content("#status") or ""
        assert shown.startswith("Forbidden: "), shown
        found = re.search(r"\(request ([0-9a-f]{32})\)$", shown)
        assert found, shown
        (line,) = [line for line in stack.nginx.access_lines() if line["request_id"] == found[1]]
        assert line["status"] == 403
        assert line["uri"].startswith(("/v1/events?", "/v1/stats/buckets?"))
        assert line["client_request_id"] == ""


class TestSearch:
    """Newest first, paged by the cursor; the chart counts what the table lists."""

    def test_pages_through_250_events(self, page: Page, stack: Stack, screenshots: Path):
        open_viewer(page, stack, service=SERVICE, range="24h")
        first = rows(page)
        assert len(first) == 100
        assert chart_total(page) == COUNT
        page.screenshot(path=screenshots / "viewer-search.png")

        seen = every_row(page)
        assert len(seen) == COUNT
        assert {row["id"] for row in seen} == set(stack.ids)
        occurred = [row["cells"][0] for row in seen]
        assert occurred == sorted(occurred, reverse=True)
        assert page.get_attribute("#page-info", "data-page") == "3"
        assert page.text_content("#page-info") == "events 201–250"

        page.click("#newer")
        settled(page)
        assert [row["id"] for row in rows(page)] == [row["id"] for row in seen[100:200]]

    def test_filters_live_in_the_url_and_the_chart_counts_the_table(
        self, page: Page, stack: Stack, browser: Browser
    ):
        open_viewer(page, stack, service=SERVICE)
        page.select_option("#f-outcome", "failure")
        page.click("#search button[type=submit]")
        page.wait_for_url(re.compile("outcome=failure"))
        settled(page)
        failures = every_row(page)
        assert len(failures) == FAILURES
        assert {row["cells"][6] for row in failures} == {"failure"}
        assert chart_total(page) == FAILURES

        page.select_option("#group-by", "type")
        page.wait_for_url(re.compile("group_by=type"))
        page.wait_for_function("() => !document.body.dataset.busy")
        assert chart_total(page) == FAILURES
        legend = page.eval_on_selector_all(
            ".u-legend .u-series:not(:first-child) .u-label", "ls => ls.map(l => l.textContent)"
        )
        assert set(legend) == set(TYPES)

        shared = page.url  # the same view, opened from the link in another tab
        context = browser.new_context()
        try:
            other = context.new_page()
            other.goto(shared)
            other.wait_for_selector("#sign-in:not([hidden])")  # the token did not travel
            other.fill("#token", stack.reader)
            other.click("#sign-in-form button[type=submit]")
            settled(other)
            assert other.input_value("#f-outcome") == "failure"
            assert other.input_value("#f-service") == SERVICE
            assert chart_total(other) == FAILURES
        finally:
            context.close()

    def test_a_selection_on_the_chart_zooms_the_search(self, page: Page, stack: Stack):
        open_viewer(page, stack, service=SERVICE, range="24h")
        box = page.locator("#chart .u-over").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
        page.mouse.up()
        page.wait_for_url(re.compile("since=.*until="))
        settled(page)
        assert page.input_value("#range") == "custom"
        since = datetime.fromisoformat(page.input_value("#since"))
        until = datetime.fromisoformat(page.input_value("#until"))
        zoomed = every_row(page)
        assert 0 < len(zoomed) < COUNT
        assert chart_total(page) == len(zoomed)
        assert all(since <= datetime.fromisoformat(row["cells"][0]) < until for row in zoomed)


class TestVerify:
    """The page recomputes the leaf, checks the proof and the signature itself."""

    def test_succeeds_on_a_real_event(self, page: Page, stack: Stack, screenshots: Path):
        open_viewer(page, stack, service=SERVICE)
        outcome, sentence = verify_shown(page, stack.ids[3])
        assert outcome == "ok", sentence
        found = re.search(r"included in the log of ([\d,]+) events signed at (\S+Z)", sentence)
        assert found, sentence
        assert int(found[1].replace(",", "")) > COUNT
        assert page.locator("#verify-steps li.ok").count() == 4  # leaf, key, head, proof
        page.screenshot(path=screenshots / "viewer-verified.png")

    def test_fails_on_an_event_altered_in_the_database(
        self, page: Page, stack: Stack, screenshots: Path
    ):
        with tampered(stack.superuser, stack.victim):
            open_viewer(page, stack, service=f"{SERVICE}-victim")
            outcome, sentence = verify_shown(page, stack.victim)
            assert outcome == "failed"
            assert "does not hash to its recorded leaf hash" in sentence
            assert '"amount": 1' in (page.text_content('#detail dd[data-field="data"]') or "")
            page.screenshot(path=screenshots / "viewer-tampered.png")

    def test_fails_on_a_tampered_proof(self, page: Page, stack: Stack):
        def flip_a_bit(route: Route) -> None:
            answer = route.fetch()
            proof = answer.json()
            node = bytearray(base64.b64decode(proof["inclusion_path"][0]))
            node[0] ^= 1
            proof["inclusion_path"][0] = base64.b64encode(bytes(node)).decode()
            route.fulfill(response=answer, json=proof)

        page.route(re.compile(r"/v1/events/[^/]+/proof\?"), flip_a_bit)
        open_viewer(page, stack, service=SERVICE)
        outcome, sentence = verify_shown(page, stack.ids[0])
        assert outcome == "failed"
        assert "does not lead to the signed root" in sentence

    @pytest.mark.parametrize(("pinned", "outcome"), [(LOG_KEY, "ok"), ("other", "failed")])
    def test_a_pinned_key_is_the_only_one_accepted(
        self, page: Page, stack: Stack, pinned: str, outcome: str
    ):
        key = LOG_KEY if pinned == LOG_KEY else base64.b64encode(b"\x01" * 32).decode()
        page.route("**/viewer/config.json", lambda route: route.fulfill(json={"public_key": key}))
        open_viewer(page, stack, service=SERVICE)
        assert "log key pinned" in (page.text_content("#key-pin") or "")
        shown, sentence = verify_shown(page, stack.ids[1])
        assert shown == outcome, sentence
        if outcome == "ok":
            assert "(by the pinned key)" in sentence
        else:
            assert "is not the key pinned in this viewer's configuration" in sentence

    def test_without_webcrypto_nothing_is_checked(self, stack: Stack, playwright: Playwright):
        """Over plain HTTP on a host name (not 127.0.0.1) there is no crypto.subtle."""
        browser = launch(playwright, "--host-resolver-rules=MAP viewer.test 127.0.0.1")
        try:
            origin = f"http://viewer.test:{stack.nginx.port}"
            watch = PageWatch(origin=origin)
            # Chromium says so of the COOP header on plain HTTP (the README: serve HTTPS).
            watch.expect_console(r"Cross-Origin-Opener-Policy header has been ignored")
            page = watch.attach(browser.new_page())
            fragment = urlencode({"token": stack.reader, "service": SERVICE})
            page.goto(f"{origin}/viewer/#{fragment}")
            settled(page)
            assert page.evaluate("isSecureContext") is False
            outcome, sentence = verify_shown(page, stack.ids[2])
            assert outcome == "failed"
            assert "no WebCrypto" in sentence
            assert "nothing was checked" in sentence
            watch.check()
        finally:
            browser.close()


class TestLive:
    """Live follows the log over SSE, read with fetch (the token goes in a header)."""

    def test_shows_a_new_event_within_2_s(self, page: Page, stack: Stack, screenshots: Path):
        service = f"{SERVICE}-live"
        open_viewer(page, stack, service=service)
        page.check("#live")
        page.wait_for_selector('#live-state[data-state="live"]')
        (elsewhere,) = stack.post([factories.event(service=f"{SERVICE}-elsewhere")])
        (posted,) = stack.post([factories.event(service=service)])
        started = time.monotonic()
        page.wait_for_selector(f'#events tr[data-id="{posted}"]', timeout=2000)
        assert time.monotonic() - started < 2.0
        assert page.locator(f'#events tr[data-id="{elsewhere}"]').count() == 0
        assert rows(page)[0]["id"] == posted
        page.screenshot(path=screenshots / "viewer-live.png")
        assert stack.follow_status() == 503  # the page holds its key's one follower
        page.uncheck("#live")
        assert page.get_attribute("#live-state", "data-state") == "off"
        # Live off ends the stream: the API notices the client gone and frees the follower
        # (long before its next heartbeat, 15 s, would have).
        wait_for(
            lambda: stack.follow_status() == 200, timeout=5, interval=0.2, what="the follower freed"
        )

    def test_leaving_the_page_frees_its_follower(self, page: Page, stack: Stack):
        open_viewer(page, stack, service=f"{SERVICE}-live")
        page.check("#live")
        page.wait_for_selector('#live-state[data-state="live"]')
        assert stack.follow_status() == 503
        page.goto("about:blank")  # the auditor goes elsewhere, Live still on
        wait_for(
            lambda: stack.follow_status() == 200, timeout=5, interval=0.2, what="the follower freed"
        )


class TestExport:
    """The current search, downloaded as the API streams it."""

    @pytest.mark.parametrize("fmt", ["ndjson", "csv"])
    def test_exports_the_search(self, page: Page, stack: Stack, fmt: str):
        open_viewer(page, stack, service=SERVICE)
        with page.expect_download() as download:
            page.click(f"#export-{fmt}")
        saved = download.value
        assert saved.suggested_filename.endswith(f".{fmt}")
        body = Path(saved.path()).read_text()
        if fmt == "ndjson":
            exported = [orjson.loads(line) for line in body.splitlines()]
        else:
            exported = list(csv.DictReader(io.StringIO(body)))
        assert sorted(e["id"] for e in exported) == sorted(stack.ids)
        page.wait_for_selector("#status:not(.error)")
        assert "Saved" in (page.text_content("#status") or "")


class TestHostileEvent:
    """Whatever an event holds is shown as text: nothing runs, nothing loads, still usable."""

    def test_renders_literally(self, page: Page, stack: Stack, watch: PageWatch, screenshots: Path):
        open_viewer(page, stack, service=f"{SERVICE}-hostile")
        (row,) = rows(page)
        assert row["cells"][3] == "user:<script>alert(1)</script>"
        assert row["cells"][4] == "url:javascript:alert(3)"

        outcome, sentence = verify_shown(page, stack.hostile)
        assert outcome == "ok", sentence  # the page's canonical form is the server's

        def field_text(name: str) -> str:
            return page.text_content(f'#detail dd[data-field="{name}"]') or ""

        assert '"<script>alert(1)</script>"' in field_text("actor")
        assert '"<img src=x onerror=alert(2)>"' in field_text("actor")
        assert '"<svg onload=alert(4)>"' in field_text("context")
        data = field_text("data")
        for literal in (
            "<iframe src=javascript:alert(6)></iframe>",
            "javascript:alert(document.cookie)",
            "<style>body{display:none}</style>",
            "${alert(7)}",
            '"__proto__"',
            "</script><script>alert(9)</script>",
        ):
            assert literal in data, literal
        assert len(data) < 20_000  # the 100 KiB string is cut to a glimpse...
        page.screenshot(path=screenshots / "viewer-hostile.png")
        page.click('#detail dd[data-field="data"] button:has-text("show all 102,400 characters")')
        assert BIG in field_text("data")  # ...and shown whole on request

        # Nothing of it became markup: no elements the event named, no script but ours.
        for selector in (
            "img",
            "iframe",
            "svg:not(.u-over svg)",
            "style",
            "b",
            "a[href^='javascript']",
        ):
            assert page.locator(f"#detail {selector}").count() == 0, selector
        assert page.locator("script").count() == 1
        assert page.evaluate("Object.prototype.polluted") is None

        # Still usable: the panel closes, the search runs again.
        close = page.locator("#close-detail")
        assert close.is_visible()
        close.click()
        page.wait_for_selector("#detail", state="hidden")
        page.click("#search button[type=submit]")
        settled(page)
        assert len(rows(page)) == 1
        assert watch.console_errors == []
        assert watch.dialogs == []
        assert watch.foreign_requests() == []
