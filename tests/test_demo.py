"""The demo content site, as a visitor sees it through WebTest."""

import pytest
from webtest import TestApp

from alloconv_gate.demo import DemoSite, make_app

PREMIUM = ["/premium/alpine-huts", "/premium/night-trains"]
UNTIL = "alloconv_gate.access_until"


@pytest.fixture
def site():
    return TestApp(DemoSite())


class TestHome:
    def test_links_to_free_and_premium_articles_and_the_sandbox(self, site):
        home = site.get("/")
        assert home.content_type == "text/html"
        assert home.charset == "utf-8"
        hrefs = {link["href"] for link in home.html.find_all("a")}
        assert hrefs == {"/free/how-it-works", *PREMIUM, "/sandbox/"}

    def test_free_link_leads_to_the_article(self, site):
        article = site.get("/").click(href="/free/")
        assert article.status_int == 200
        assert "This article is free" in article.text

    def test_links_follow_the_mount_point(self, site):
        home = site.get("/", extra_environ={"SCRIPT_NAME": "/site"})
        assert '<a href="/site/premium/alpine-huts">' in home.text

    def test_self_contained_and_readable_on_a_phone(self, site):
        for path in ["/", "/free/how-it-works", *PREMIUM]:
            page = site.get(path).text
            assert 'name="viewport"' in page
            assert "<link" not in page
            assert "src=" not in page


class TestPremium:
    @pytest.mark.parametrize("path", PREMIUM)
    def test_shows_the_article_and_a_way_home(self, site, path):
        page = site.get(path)
        assert page.html.h1.text
        assert page.html.find("a", href="/")
        assert "access lasts" not in page.text

    @pytest.mark.parametrize("path", PREMIUM)
    def test_says_until_when_access_lasts(self, site, path):
        page = site.get(path, extra_environ={UNTIL: 1455474600})
        assert "Your access lasts until 2016-02-14 18:30 UTC." in page.text

    @pytest.mark.parametrize("value", ["1455474600", 1455474600.0, True, None], ids=repr)
    def test_ignores_an_access_time_that_is_not_an_int(self, site, value):
        page = site.get(PREMIUM[0], extra_environ={UNTIL: value})
        assert "access lasts" not in page.text


class TestOtherPaths:
    @pytest.mark.parametrize(
        "path", ["/premium/", "/free/how-it-works/", "/premium/nope", "/<script>alert(1)</script>"]
    )
    def test_are_404(self, site, path):
        response = site.get(path, status=404)
        assert response.content_type == "text/plain"
        assert "<script>" not in response.text


class TestMakeApp:
    def test_builds_the_site(self):
        assert isinstance(make_app({}), DemoSite)

    def test_refuses_any_setting_by_name(self):
        with pytest.raises(ValueError, match="colour"):
            make_app({}, colour="red")
