"""Paid responses never land in a shared cache: Cache-Control private, Vary: Cookie."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alloconv_gate.caching import private_cache_control, private_headers, vary_on_cookie


def header(headers, name):
    """The values of header ``name`` (case-insensitive), in order."""
    return [value for key, value in headers if key.lower() == name.lower()]


def directives(cache_control: str) -> list[str]:
    return [d.strip().lower() for d in cache_control.split(",") if d.strip()]


class TestCacheControl:
    @pytest.mark.parametrize(
        "given_value, expected",
        [
            pytest.param("", "private", id="none"),
            pytest.param("public", "private", id="public"),
            pytest.param("PUBLIC", "private", id="public-upper-case"),
            pytest.param("public, max-age=60", "private, max-age=60", id="public-max-age"),
            pytest.param("max-age=60", "private, max-age=60", id="max-age-kept"),
            pytest.param("s-maxage=600", "private", id="s-maxage"),
            pytest.param("s-maxage = 600, max-age=60", "private, max-age=60", id="s-maxage-spaced"),
            pytest.param(
                "max-age=60, proxy-revalidate", "private, max-age=60", id="proxy-revalidate"
            ),
            pytest.param("no-store", "no-store", id="no-store-stricter"),
            pytest.param("No-Store", "No-Store", id="no-store-any-case"),
            pytest.param("public, no-store", "no-store", id="public-no-store"),
            pytest.param("private", "private", id="private"),
            pytest.param("private, max-age=60", "private, max-age=60", id="private-max-age"),
            pytest.param("max-age=0, private", "max-age=0, private", id="private-later"),
            pytest.param('private="Set-Cookie"', "private", id="private-field-made-plain"),
            pytest.param(
                'private="Set-Cookie", max-age=60',
                "private, max-age=60",
                id="private-field-max-age",
            ),
            pytest.param(
                'private="Set-Cookie, Set-Cookie2", max-age=60',
                "private, max-age=60",
                id="private-field-list",
            ),
            pytest.param(
                'no-cache="Set-Cookie, Foo", public',
                'private, no-cache="Set-Cookie, Foo"',
                id="quoted-list-kept",
            ),
            pytest.param("no-cache", "private, no-cache", id="no-cache"),
            pytest.param(
                "must-revalidate, max-age=0", "private, must-revalidate, max-age=0", id="kept-order"
            ),
            pytest.param(" , ,max-age=5,, ", "private, max-age=5", id="empty-directives"),
        ],
    )
    def test_table(self, given_value, expected):
        assert private_cache_control(given_value) == expected


class TestVary:
    @pytest.mark.parametrize(
        "given_value, expected",
        [
            pytest.param("", "Cookie", id="none"),
            pytest.param("Accept-Encoding", "Accept-Encoding, Cookie", id="one-field"),
            pytest.param(
                "Accept-Encoding,Accept-Language",
                "Accept-Encoding, Accept-Language, Cookie",
                id="two-fields",
            ),
            pytest.param("*", "*", id="star"),
            pytest.param("Accept, *", "Accept, *", id="star-among-others"),
            pytest.param("Cookie", "Cookie", id="cookie"),
            pytest.param("cookie", "cookie", id="cookie-lower-case"),
            pytest.param("Accept, COOKIE", "Accept, COOKIE", id="cookie-upper-case"),
            pytest.param(" Accept ,, ", "Accept, Cookie", id="blank-fields"),
            pytest.param("Cookies", "Cookies, Cookie", id="similar-name-is-not-cookie"),
        ],
    )
    def test_table(self, given_value, expected):
        assert vary_on_cookie(given_value) == expected


class TestPrivateHeaders:
    def test_no_caching_headers_gets_both(self):
        result = private_headers([("Content-Type", "text/html")])
        assert header(result, "Cache-Control") == ["private"]
        assert header(result, "Vary") == ["Cookie"]

    def test_other_headers_kept_in_order(self):
        given_headers = [
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=1"),
            ("Cache-Control", "public"),
            ("X-Frame-Options", "DENY"),
            ("Set-Cookie", "b=2"),
            ("Vary", "Accept"),
            ("Content-Length", "12"),
        ]
        result = private_headers(given_headers)
        others = [(k, v) for k, v in result if k.lower() not in ("cache-control", "vary")]
        assert others == [
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=1"),
            ("X-Frame-Options", "DENY"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "12"),
        ]
        assert header(result, "Cache-Control") == ["private"]
        assert header(result, "Vary") == ["Accept, Cookie"]

    def test_multiple_cache_control_headers_merged(self):
        result = private_headers([("Cache-Control", "public"), ("cache-control", "max-age=60")])
        assert header(result, "Cache-Control") == ["private, max-age=60"]

    def test_multiple_cache_control_headers_one_stricter(self):
        result = private_headers([("Cache-Control", "max-age=60"), ("Cache-Control", "no-store")])
        assert header(result, "Cache-Control") == ["max-age=60, no-store"]

    def test_multiple_vary_headers_merged(self):
        result = private_headers([("Vary", "Accept"), ("VARY", "Accept-Language")])
        assert header(result, "Vary") == ["Accept, Accept-Language, Cookie"]

    def test_vary_with_cookie_not_doubled(self):
        result = private_headers([("vary", "cookie, Accept")])
        assert header(result, "Vary") == ["cookie, Accept"]

    @pytest.mark.parametrize(
        "name",
        [
            "Surrogate-Control",
            "surrogate-control",
            "CDN-Cache-Control",
            "Cdn-Cache-Control",
            "Cloudflare-CDN-Cache-Control",
            "Edge-Control",
            "X-Accel-Expires",
        ],
    )
    def test_cdn_overrides_removed(self, name):
        result = private_headers([(name, "max-age=3600"), ("Content-Type", "text/plain")])
        assert header(result, name) == []
        assert header(result, "Content-Type") == ["text/plain"]

    def test_headers_given_as_an_iterator_are_all_kept(self):
        result = private_headers(iter([("Content-Type", "text/html"), ("Set-Cookie", "a=b")]))
        assert header(result, "Content-Type") == ["text/html"]
        assert header(result, "Set-Cookie") == ["a=b"]
        assert header(result, "Cache-Control") == ["private"]

    def test_input_list_untouched(self):
        given_headers = [("Cache-Control", "public")]
        private_headers(given_headers)
        assert given_headers == [("Cache-Control", "public")]


# Directives as apps write them, including quoted lists with commas inside.
directive = st.one_of(
    st.sampled_from(
        [
            "public",
            "PUBLIC",
            "Public",
            "private",
            "Private",
            'private="Set-Cookie"',
            'private="Set-Cookie, Set-Cookie2"',
            "no-store",
            "no-cache",
            'no-cache="Set-Cookie, X-Foo"',
            "max-age=60",
            "s-maxage=600",
            "S-MaxAge = 5",
            "proxy-revalidate",
            "must-revalidate",
            "immutable",
            "stale-while-revalidate=30",
            "",
        ]
    ),
    st.from_regex(r"\A[a-z][a-z\-]{0,12}(=[0-9]{1,4})?\Z"),
)
cache_control = st.lists(directive, max_size=6).map(", ".join)


def split_directives(value: str) -> list[str]:
    """Directives of a Cache-Control value, commas inside quotes not splitting."""
    parts, current, quoted = [], "", False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


class TestProperties:
    @given(cache_control)
    def test_never_shared_always_private_or_no_store(self, value):
        result = split_directives(private_cache_control(value))
        names = [d.split("=", 1)[0].strip().lower() for d in result]
        assert "public" not in names
        assert "s-maxage" not in names
        assert "proxy-revalidate" not in names
        assert "private" in (d.lower() for d in result) or "no-store" in names
        # private="..." would let shared caches keep the rest: only plain private remains.
        assert all(
            d.lower() == "private" for d, n in zip(result, names, strict=True) if n == "private"
        )

    @given(cache_control)
    def test_quotes_stay_balanced(self, value):
        assert private_cache_control(value).count('"') % 2 == 0

    @given(cache_control)
    def test_idempotent(self, value):
        once = private_cache_control(value)
        assert private_cache_control(once) == once

    @given(st.lists(st.sampled_from(["Accept", "Cookie", "cookie", "*", "Origin", ""]), max_size=4))
    def test_vary_always_covers_cookie(self, fields):
        result = [f.strip() for f in vary_on_cookie(", ".join(fields)).split(",")]
        assert "*" in result or "cookie" in (f.lower() for f in result)


def random_case(name):
    def spell(upper):
        return "".join(c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True))

    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(spell)


# Header names as apps send them: the ones the gate rewrites or drops, in any case, and
# others, some of which look like them (Access-Control-*, Expires).
header_name = st.one_of(
    st.sampled_from(
        [
            "Cache-Control",
            "Vary",
            "Surrogate-Control",
            "CDN-Cache-Control",
            "Cloudflare-CDN-Cache-Control",
            "Edge-Control",
            "X-Accel-Expires",
            "Access-Control-Allow-Origin",
            "Expires",
            "Content-Type",
            "Set-Cookie",
            "ETag",
        ]
    ).flatmap(random_case),
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"),
)
header_value = st.sampled_from(["public, max-age=60", "no-store", "Accept", "cookie", "x", ""])


class TestPrivateHeadersProperties:
    """Whatever headers the app sends, the paid page leaves private, varying on Cookie."""

    @given(st.lists(st.tuples(header_name, header_value), max_size=8))
    def test_always_private_and_varying_on_cookie(self, headers):
        result = private_headers(headers)
        names = [name.lower() for name, _ in result]
        assert names.count("cache-control") == 1
        assert names.count("vary") == 1
        cache_control = split_directives(header(result, "Cache-Control")[0])
        directives = [d.split("=", 1)[0].strip().lower() for d in cache_control]
        assert "public" not in directives and "s-maxage" not in directives
        assert "private" in directives or "no-store" in directives
        vary = [f.strip().lower() for f in header(result, "Vary")[0].split(",")]
        assert "cookie" in vary or "*" in vary
        assert not {"surrogate-control", "edge-control", "x-accel-expires"} & set(names)
        assert not any(name.endswith("cdn-cache-control") for name in names)

    @given(st.lists(st.tuples(header_name, header_value), max_size=8))
    def test_other_headers_kept_as_sent_and_in_order(self, headers):
        ruled = ("cache-control", "vary", "surrogate-control", "edge-control", "x-accel-expires")
        others = [
            (name, value)
            for name, value in headers
            if name.lower() not in ruled and not name.lower().endswith("cdn-cache-control")
        ]
        assert private_headers(headers)[: len(others)] == others
