"""The gate in a real browser: Debian's Chromium, driven by Playwright, in front of the demo.

What a visitor does, in French and in English: open a premium page, read the number to
call, type a wrong code and read the alert, type a good sandbox code and land on the
article, reload and stay in, then find the gate again once access has ended (an injected
clock moves time on; the browser still holds its cookie, the server refuses it). axe-core
audits the gate page, as it first shows and showing an error, in light and dark mode; the
test saves the screenshots that the README shows (``docs/screenshots``).

``make test`` installs what this needs: Debian's ``chromium``, ``playwright`` (pip, no
browser download: Playwright drives the system Chromium) and axe-core (``npm ci`` in
``tests/browser``). When one is missing the tests skip, except under ``CI=true``, where
a skipped browser test would hide that the page was never seen in a browser: they fail.
"""

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from clock import FakeClock
from servers import serve

from alloconv_gate import Gate
from alloconv_gate.demo import DemoSite
from alloconv_gate.messages import catalogue

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the ``chromium`` fixture: a skip, or a failure under CI
    expect = sync_playwright = None

HERE = Path(__file__).resolve().parent
AXE = HERE / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = HERE.parent / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No call home: the machine's network is closed, and a test talks to loopback only.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 20_000
TIMEOUT_MS = 5_000  # every action, navigation and expectation
AXE_TIMEOUT_MS = 10_000

KEY = "sandbox-key"
SECRET = "correct-horse-battery-staple-0123456789"
PALIER = "fra1"
DURATION = 60  # seconds of access, on the fake clock
ARTICLE = "/premium/alpine-huts"
ARTICLE_TITLE = "A winter in the Alpine huts"
WRONG_CODE = "WRONG0000"  # well-formed, so it goes to AlloConv, which never issued it
BLOCKING = ("serious", "critical")


def missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; under CI=true the browser tests must run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, headless, for the tests of this module; closed after them."""
    if sync_playwright is None:
        missing("playwright is not installed (pip install -r requirements-dev.txt)")
    executable = shutil.which("chromium")
    if executable is None:
        missing("chromium is not installed (Debian: apt-get install chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def axe_script():
    if not AXE.is_file():
        missing("axe-core is not installed (cd tests/browser && npm ci)")
    return AXE


@contextlib.contextmanager
def open_page(browser, **context_options):
    """A page in a fresh browser context (no cookies), every wait bounded."""
    context = browser.new_context(**context_options)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        yield context.new_page()
    finally:
        context.close()


@dataclass(frozen=True)
class Site:
    url: str
    clock: FakeClock
    text: dict
    gate: Gate


@pytest.fixture(params=["fr", "en"])
def language(request):
    return request.param


@pytest.fixture
def duration():
    return DURATION


@pytest.fixture
def site(language, duration, sandbox_url):
    """The demo behind a gate for ``language``, over real HTTP, on a fake clock."""
    clock = FakeClock()
    gate = Gate(
        DemoSite(),
        clock=clock,
        api_key=KEY,
        secret=SECRET,
        palier=PALIER,
        prefixes="/premium",
        api_base=sandbox_url,
        timeout="2",
        store="memory",
        duration=str(duration),
        language=language,
    )
    with serve(gate) as server:
        yield Site(server.url, clock, catalogue(language), gate)


def submit(page, text, code):
    page.get_by_label(text["code_label"]).fill(code)
    page.get_by_role("button", name=text["submit"]).click()


class TestVisitor:
    def test_pays_reads_and_is_gated_again_when_access_ends(self, chromium, site, sandbox):
        text = site.text
        with open_page(chromium) as page:
            requested = []
            page.on("request", lambda request: requested.append(request.url))

            response = page.goto(site.url + ARTICLE)
            assert response.status == 402
            expect(page.get_by_role("heading", level=1)).to_have_text(text["title"])
            number = page.locator("a.number")
            expect(number).to_have_text(sandbox.numbers[PALIER])
            shown = number.inner_text()
            dial = "".join(ch for ch in shown if ch.isdigit())
            expect(page.get_by_role("link", name=shown)).to_have_attribute("href", f"tel:{dial}")
            expect(page.get_by_text(text[f"price_notice.{PALIER}"])).to_be_visible()
            expect(page.get_by_role("alert")).to_have_count(0)  # no error yet, nothing shown

            submit(page, text, WRONG_CODE)
            expect(page.get_by_role("alert")).to_have_text(text["error_invalid"])
            code_field = page.get_by_label(text["code_label"])
            expect(code_field).to_have_value(WRONG_CODE)
            expect(code_field).to_have_attribute("aria-invalid", "true")

            submit(page, text, sandbox.issue_code(PALIER))
            expect(page.get_by_role("heading", level=1)).to_have_text(ARTICLE_TITLE)
            assert page.url == site.url + ARTICLE
            expect(page.get_by_text("Your access lasts until")).to_be_visible()

            assert page.reload().status == 200
            expect(page.get_by_role("heading", level=1)).to_have_text(ARTICLE_TITLE)

            site.clock.advance(DURATION - 1)
            assert page.reload().status == 200
            expect(page.get_by_role("heading", level=1)).to_have_text(ARTICLE_TITLE)

            site.clock.advance(2)
            response = page.reload()
            assert response.status == 402
            expect(page.get_by_role("heading", level=1)).to_have_text(text["title"])
            expect(page.locator("a.number")).to_have_text(shown)
            # Still sent by the browser, and refused by the server: access ended on time.
            assert [c["name"] for c in page.context.cookies()] == ["alloconv_access"]

        assert requested
        assert all(url.startswith(site.url + "/") for url in requested), requested


def audit(page, axe_script):
    """axe-core's violations on the page as it is now."""
    page.add_script_tag(path=axe_script)
    results = page.evaluate(
        """timeout => Promise.race([
            axe.run(),
            new Promise((_, reject) =>
                setTimeout(() => reject(new Error(`axe.run took over ${timeout} ms`)), timeout)),
        ])""",
        AXE_TIMEOUT_MS,
    )
    assert results["passes"], "axe-core checked nothing"
    return results["violations"]


def describe(violation) -> str:
    targets = ", ".join(" ".join(node["target"]) for node in violation["nodes"])
    return f"{violation['impact']} {violation['id']}: {violation['help']} [{targets}]"


class TestAccessibility:
    @pytest.mark.parametrize("scheme", ["light", "dark"])
    def test_gate_page_has_no_serious_violation(self, chromium, axe_script, site, scheme):
        text = site.text
        found = {}
        # bypass_csp: the page's policy forbids scripts, axe's included.
        with open_page(chromium, bypass_csp=True, color_scheme=scheme) as page:
            page.goto(site.url + ARTICLE)
            expect(page.get_by_role("heading", level=1)).to_have_text(text["title"])
            found["plain"] = audit(page, axe_script)
            submit(page, text, WRONG_CODE)
            expect(page.get_by_role("alert")).to_have_text(text["error_invalid"])
            found["error"] = audit(page, axe_script)

        for state, violations in found.items():
            for violation in violations:
                print(f"{state}: {describe(violation)}")
        blocking = [
            f"{state}: {describe(violation)}"
            for state, violations in found.items()
            for violation in violations
            if violation["impact"] in BLOCKING
        ]
        assert not blocking, "axe-core:\n" + "\n".join(blocking)


class TestScreenshots:
    @pytest.mark.parametrize("language", ["en"])
    @pytest.mark.parametrize("duration", [86400], ids=["24h"])  # the default, as a site shows
    @pytest.mark.parametrize(
        ("name", "device"),
        [
            ("phone", {"viewport": {"width": 390, "height": 844}, "is_mobile": True}),
            ("desktop", {"viewport": {"width": 1280, "height": 800}}),
        ],
        ids=["phone", "desktop"],
    )
    def test_saves_the_gate_page(self, chromium, site, name, device):
        with open_page(chromium, color_scheme="light", **device) as page:
            page.goto(site.url + ARTICLE)
            expect(page.get_by_role("heading", level=1)).to_have_text(site.text["title"])
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            path = SCREENSHOTS / f"gate-{name}.png"
            page.screenshot(path=path, animations="disabled", caret="hide")
        assert path.stat().st_size > 0


class TestSupportLink:
    """ "I paid and got nothing": support sends a link; the visitor opens it and presses."""

    def test_a_link_opens_the_page_once(self, chromium, site):
        gate = site.gate
        parts = gate._parts["/premium"]
        token = parts.verifier._links.issue("support-case-1", 3600)
        link = f"{site.url}{ARTICLE}?alloconv_grant={token}"
        text = site.text
        with open_page(chromium) as page:
            assert page.goto(link).status == 200
            page.get_by_role("button", name=text["link_submit"]).click()
            expect(page.get_by_role("heading", level=1)).to_have_text(ARTICLE_TITLE)
            assert "alloconv_grant" not in page.url  # back on the page, without the link
        with open_page(chromium) as elsewhere:  # the same link, once more
            elsewhere.goto(link)
            elsewhere.get_by_role("button", name=text["link_submit"]).click()
            expect(elsewhere.get_by_role("alert")).to_have_text(text["error_link"])
