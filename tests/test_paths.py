"""Which paths a gate protects: segment boundaries, normalisation tricks, PEP 3333 text."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alloconv_gate.paths import PrefixMatcher, normalise_path, normalise_prefix


def matcher(*prefixes: str) -> PrefixMatcher:
    """A matcher built the way the config builds it: from prefixes as a webmaster writes them."""
    return PrefixMatcher([normalise_prefix(prefix) for prefix in prefixes])


def as_path_info(text: str) -> str:
    """What a PEP 3333 server puts in PATH_INFO for a URL path ``text``: UTF-8 bytes as latin-1."""
    return text.encode("utf-8").decode("latin-1")


class TestSegmentBoundaries:
    @pytest.mark.parametrize(
        "path, expected",
        [
            pytest.param("/premium", "/premium", id="the-prefix-itself"),
            pytest.param("/premium/", "/premium", id="trailing-slash"),
            pytest.param("/premium/x", "/premium", id="below"),
            pytest.param("/premium/x/y.html", "/premium", id="deep"),
            pytest.param("/premiumx", None, id="longer-name"),
            pytest.param("/premium-x", None, id="dash-suffix"),
            pytest.param("/premium.html", None, id="extension"),
            pytest.param("/premiu", None, id="shorter"),
            pytest.param("/", None, id="root"),
            pytest.param("/free/premium", None, id="elsewhere-in-path"),
            pytest.param("/Premium", None, id="other-case"),
        ],
    )
    def test_match(self, path, expected):
        assert matcher("/premium").match(path) == expected

    @pytest.mark.parametrize("configured", ["/premium/", "/premium//", "/premium/."])
    def test_trailing_slash_in_config_is_the_same_prefix(self, configured):
        m = matcher(configured)
        assert m.match("/premium") == "/premium"
        assert m.match("/premium/x") == "/premium"
        assert m.match("/premiumx") is None

    def test_nested_prefix(self):
        m = matcher("/a/b")
        assert m.match("/a/b/c") == "/a/b"
        assert m.match("/a/b") == "/a/b"
        assert m.match("/a") is None
        assert m.match("/a/bc") is None
        assert m.match("/a/c") is None


class TestWholeSite:
    @pytest.mark.parametrize(
        "path",
        [
            pytest.param("/", id="root"),
            pytest.param("/anything", id="page"),
            pytest.param("/a/b/c", id="deep"),
            pytest.param("", id="empty-path-info"),
            pytest.param("x", id="no-leading-slash"),
            pytest.param("/..", id="above-root"),
        ],
    )
    def test_slash_protects_everything(self, path):
        assert matcher("/").match(path) == ""

    def test_slash_prefix_is_the_empty_string(self):
        assert normalise_prefix("/") == ""


class TestNormalisationTricks:
    @pytest.mark.parametrize(
        "path, expected",
        [
            pytest.param("//premium/x", "/premium", id="double-leading-slash"),
            pytest.param("/premium//x", "/premium", id="double-slash-inside"),
            pytest.param("///premium", "/premium", id="triple-slash"),
            pytest.param("/premium/./x", "/premium", id="dot-segment"),
            pytest.param("/./premium", "/premium", id="dot-first"),
            pytest.param("/free/../premium/x", "/premium", id="dot-dot-into"),
            pytest.param("/free/a/../../premium", "/premium", id="two-dot-dots"),
            pytest.param("/../premium", "/premium", id="dot-dot-above-root"),
            pytest.param("/../../premium/x", "/premium", id="many-dot-dots-above-root"),
            pytest.param("premium/x", "/premium", id="no-leading-slash"),
            pytest.param("/premium/.", "/premium", id="trailing-dot"),
            pytest.param("/premium/x/..", "/premium", id="dot-dot-back-to-prefix"),
            # Under the prefix as written: an app that routes the raw path could serve it.
            pytest.param("/premium/..", "/premium", id="dot-dot-out-of-prefix"),
            pytest.param("/premium/../free", "/premium", id="dot-dot-elsewhere"),
            pytest.param("/free/x/../../premium", "/premium", id="dot-dot-into-prefix"),
            pytest.param("", None, id="empty-path-info"),
            pytest.param("/premium./x", None, id="dot-in-name-is-no-trick"),
            pytest.param("/premium/...", "/premium", id="three-dots-is-a-name"),
        ],
    )
    def test_match(self, path, expected):
        assert matcher("/premium").match(path) == expected

    @pytest.mark.parametrize(
        "path, expected",
        [
            pytest.param("", "/", id="empty"),
            pytest.param("/", "/", id="root"),
            pytest.param("a/b", "/a/b", id="relative"),
            pytest.param("//a//b//", "/a/b", id="doubled"),
            pytest.param("/a/./b/.", "/a/b", id="dots"),
            pytest.param("/a/b/../c", "/a/c", id="dot-dot"),
            pytest.param("/../../a", "/a", id="never-above-root"),
            pytest.param("/a/.../b", "/a/.../b", id="three-dots-kept"),
            pytest.param("/.hidden/x", "/.hidden/x", id="dot-file-kept"),
        ],
    )
    def test_normalise_path(self, path, expected):
        assert normalise_path(path) == expected


class TestLongestPrefix:
    def test_longest_wins_whatever_the_order(self):
        for prefixes in (("/a", "/a/b"), ("/a/b", "/a")):
            m = matcher(*prefixes)
            assert m.match("/a/b/c") == "/a/b"
            assert m.match("/a/bc") == "/a"
            assert m.match("/a/c") == "/a"

    def test_whole_site_with_others(self):
        m = matcher("/", "/premium")
        assert m.match("/premium/x") == "/premium"
        assert m.match("/other") == ""

    def test_several_unrelated(self):
        m = matcher("/premium", "/videos")
        assert m.match("/videos/1") == "/videos"
        assert m.match("/premium") == "/premium"
        assert m.match("/vide") is None


class TestUnicode:
    @pytest.mark.parametrize(
        "configured",
        [
            pytest.param("/café", id="text"),
            pytest.param("/caf%C3%A9", id="percent-encoded"),
            pytest.param("/caf%c3%a9", id="percent-encoded-lower-case"),
        ],
    )
    def test_prefix_matches_utf8_path_info(self, configured):
        m = matcher(configured)
        assert m.match(as_path_info("/café/menu")) == as_path_info("/café")
        assert m.match(as_path_info("/café")) is not None
        assert m.match(as_path_info("/cafés")) is None
        # A latin-1 é (one byte %E9) is another path: not the one the prefix names.
        assert m.match("/caf\xe9") is None

    def test_non_latin_script(self):
        m = matcher("/статьи")
        assert m.match(as_path_info("/статьи/1")) == as_path_info("/статьи")

    def test_percent_encoded_ascii_is_decoded(self):
        assert normalise_prefix("/pre%6Dium") == "/premium"


class TestBadPrefixes:
    @pytest.mark.parametrize(
        "prefix",
        [
            pytest.param("premium", id="no-leading-slash"),
            pytest.param("", id="empty"),
            pytest.param("http://example.com/premium", id="url"),
            pytest.param("/premium?a=1", id="query"),
            pytest.param("/premium#x", id="fragment"),
            pytest.param("/pre\tmium", id="tab"),
            pytest.param("/pre\nmium", id="newline"),
            pytest.param("/caf%E9", id="percent-not-utf-8"),
            pytest.param("/%FF", id="percent-invalid-byte"),
        ],
    )
    def test_refused(self, prefix):
        with pytest.raises(ValueError):
            normalise_prefix(prefix)

    def test_surrounding_spaces_ignored(self):
        assert normalise_prefix("  /premium  ") == "/premium"


# Segments that exercise every branch of the normaliser, plus ordinary names.
segment = st.one_of(
    st.sampled_from(["", ".", "..", "...", "premium", "premiumx", "free", "a", "x.html"]),
    st.text(alphabet="ab.-_%é", min_size=1, max_size=4),
)
raw_path = st.lists(segment, max_size=8).map("/".join)
absolute_path = raw_path.map(lambda path: "/" + path)


def reference_match(prefixes, path):
    """The slow, obvious reading of the rules: under a prefix once resolved, or else
    as written (doubled slashes and ``.`` aside)."""
    for candidate in (normalise_path(path), normalise_path(path, resolve_parents=False)):
        found = [p for p in prefixes if candidate == p or candidate.startswith(p + "/")]
        if found:
            return max(found, key=len)
    return None


prefix_segment = st.sampled_from(["premium", "premiumx", "a", "b", "free", "é"])
prefix = st.lists(prefix_segment, min_size=0, max_size=3).map(lambda s: "/" + "/".join(s))


class TestProperties:
    def test_the_whole_site_prefix_wins_when_resolved(self):
        assert PrefixMatcher(["", "/b"]).match("b/..") == ""

    @given(raw_path)
    def test_normalise_path_is_idempotent(self, path):
        once = normalise_path(path)
        assert normalise_path(once) == once

    @given(raw_path)
    def test_normalise_path_leaves_no_tricks(self, path):
        normal = normalise_path(path)
        assert normal.startswith("/")
        assert "//" not in normal
        if normal != "/":
            assert not normal.endswith("/")
            segments = normal.split("/")[1:]
            assert "." not in segments
            assert ".." not in segments

    @given(
        st.lists(prefix, min_size=1, max_size=4, unique=True), st.one_of(raw_path, absolute_path)
    )
    def test_matcher_agrees_with_reference(self, prefixes, path):
        normal = sorted({normalise_prefix(p) for p in prefixes})
        assert PrefixMatcher(normal).match(path) == reference_match(normal, path)

    @given(
        st.text(alphabet="abx.-", max_size=4),
        st.lists(segment.filter(lambda s: s != ".."), max_size=4).map("/".join),
    )
    def test_never_matches_a_longer_name(self, tail, below):
        # Whatever follows, a path under /premiumx (or /premium-, /premium.) stays outside.
        m = matcher("/premium")
        assert m.match(f"/premium{tail or 'x'}/{below}") is None
