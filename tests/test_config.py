"""The options: ini strings and Python values in, one frozen GateConfig out, or an error
that names the option."""

import dataclasses
import os
import re
from pathlib import Path

import pytest

from alloconv_gate.config import (
    DEFAULT_API_BASE,
    MAX_DURATION,
    PUBLISHED_SECRETS,
    ConfigError,
    parse_options,
)

SECRET = "s3cr3t-" + "x" * 30
OLD_SECRET = "old-" + "y" * 40
API_KEY = "K3Y-abcdef123456"


def ini(**overrides):
    """The options of a minimal ini section, every value a string, with ``overrides``."""
    options = {"api_key": API_KEY, "secret": SECRET, "palier": "fra1", "prefixes": "/premium"}
    options.update(overrides)
    return {key: value for key, value in options.items() if value is not ...}


def config_error(options, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_options(options, **kwargs)
    return info.value


class TestDefaults:
    def test_minimal_ini_gets_documented_defaults(self):
        config = parse_options(ini())
        assert config.api_key == API_KEY
        assert config.secrets == (SECRET,)
        assert config.palier == "fra1"
        assert config.prefixes == ("/premium",)
        assert config.duration == 24 * 3600
        assert config.api_base == DEFAULT_API_BASE == "https://www.alloconv.fr/scripts"
        assert config.timeout == 5
        assert config.number_ttl == 3600
        assert config.number is None
        assert config.cookie_name == "alloconv_access"
        assert config.cookie_secure is None  # auto
        assert config.language == "fr"

    def test_default_price_notice_is_french_for_fra1(self):
        assert "3,00 €" in parse_options(ini()).price_notice

    def test_default_price_notice_follows_language(self):
        assert "EUR 3.00" in parse_options(ini(language="en")).price_notice

    def test_empty_optional_values_mean_default(self):
        # ``number =`` with nothing after it in an ini gives an empty string.
        config = parse_options(ini(number="", price_notice="  "))
        assert config.number is None
        assert "3,00 €" in config.price_notice

    def test_none_python_values_mean_default(self):
        config = parse_options(ini(cookie_secure=None, language=None, duration=None))
        assert config.cookie_secure is None
        assert config.language == "fr"
        assert config.duration == 86400


class TestFrozen:
    def test_assignment_fails(self):
        config = parse_options(ini())
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.prefixes = ()  # type: ignore[misc]

    def test_repr_hides_key_and_secrets(self):
        config = parse_options(ini(secret=f"{SECRET} {OLD_SECRET}"))
        for text in (repr(config), str(config)):
            assert API_KEY not in text
            assert SECRET not in text
            assert OLD_SECRET not in text
            assert "fra1" in text  # still says which gate it is

    def test_short_secret_error_does_not_echo_it(self):
        short = "tooshort-but-secret"
        error = config_error(ini(secret=short))
        assert short not in str(error)


class TestRequired:
    @pytest.mark.parametrize(
        "option, overrides",
        [
            pytest.param("api_key", {"api_key": ...}, id="api_key-absent"),
            pytest.param("api_key", {"api_key": "  "}, id="api_key-blank"),
            pytest.param("secret", {"secret": ...}, id="secret-absent"),
            pytest.param("secret", {"secret": ""}, id="secret-empty"),
            pytest.param("palier", {"palier": ...}, id="palier-absent"),
            pytest.param("palier", {"palier": " "}, id="palier-blank"),
            pytest.param("prefixes", {"prefixes": ...}, id="prefixes-absent"),
            pytest.param("prefixes", {"prefixes": "   "}, id="prefixes-blank"),
            pytest.param("prefixes", {"prefixes": []}, id="prefixes-empty-list"),
            pytest.param("prefixes", {"prefixes": ()}, id="prefixes-empty-tuple"),
        ],
    )
    def test_missing_option_is_named(self, option, overrides):
        error = config_error(ini(**overrides))
        assert error.option == option
        assert repr(option) in str(error)

    def test_missing_secret_mentions_secret_file(self):
        assert "secret_file" in str(config_error(ini(secret=...)))

    def test_error_is_a_value_error(self):
        # Callers that catch ValueError around start-up still see it.
        with pytest.raises(ValueError):
            parse_options(ini(palier=...))


class TestUnknownOption:
    @pytest.mark.parametrize(
        "typo, suggestion",
        [
            pytest.param("secrets", "secret", id="plural"),
            pytest.param("prefix", "prefixes", id="singular"),
            pytest.param("cookie_secur", "cookie_secure", id="missing-letter"),
            pytest.param("apikey", "api_key", id="no-underscore"),
            pytest.param("langage", "language", id="french-spelling"),
        ],
    )
    def test_typo_is_named_with_a_hint(self, typo, suggestion):
        error = config_error({**ini(), typo: "x"})
        assert error.option == typo
        assert "unknown option" in str(error)
        assert f"did you mean {suggestion!r}" in str(error)

    def test_unrelated_name_has_no_hint(self):
        error = config_error({**ini(), "zzzzzz": "1"})
        assert error.option == "zzzzzz"
        assert "unknown option" in str(error)
        assert "did you mean" not in str(error)


class TestSecret:
    def test_whitespace_separated_secrets_first_signs(self):
        config = parse_options(ini(secret=f"  {SECRET}\n   {OLD_SECRET}\n"))
        assert config.secrets == (SECRET, OLD_SECRET)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param([SECRET, OLD_SECRET], id="list"),
            pytest.param((SECRET, OLD_SECRET), id="tuple"),
        ],
    )
    def test_python_sequence(self, value):
        assert parse_options(ini(secret=value)).secrets == (SECRET, OLD_SECRET)

    def test_exactly_32_characters_is_enough(self):
        assert parse_options(ini(secret="a" * 32)).secrets == ("a" * 32,)

    @pytest.mark.parametrize(
        "value, position",
        [
            pytest.param("a" * 31, 1, id="31-chars"),
            pytest.param(f"{SECRET} short", 2, id="second-too-short"),
            pytest.param([SECRET, "b" * 10], 2, id="list-second-too-short"),
        ],
    )
    def test_short_secret_refused(self, value, position):
        error = config_error(ini(secret=value))
        assert error.option == "secret"
        assert f"secret number {position}" in str(error)
        assert "at least 32" in str(error)

    def test_empty_list_refused(self):
        assert config_error(ini(secret=[])).option == "secret"

    def test_secret_and_secret_file_both_refused(self, tmp_path):
        (tmp_path / "secret").write_text(SECRET)
        error = config_error(ini(secret_file="secret"), here=str(tmp_path))
        assert error.option == "secret"
        assert "'secret_file'" in str(error)
        assert "not both" in str(error)


class TestPublishedSecret:
    """The demo's secret is in every copy of the package: with a real AlloConv it would
    let anyone sign access cookies."""

    DEMO = "demo-secret-do-not-use-in-production-0123456789"

    @pytest.mark.parametrize(
        "secret",
        [pytest.param(DEMO, id="alone"), pytest.param(f"{SECRET} {DEMO}", id="kept-for-rotation")],
    )
    def test_refused_with_the_real_alloconv(self, secret):
        error = config_error(ini(secret=secret))  # api_base: the real service
        assert error.option == "secret"
        assert "demo" in str(error) and "token_urlsafe" in str(error)

    def test_refused_from_a_file_naming_the_file_option(self, tmp_path):
        (tmp_path / "secret").write_text(self.DEMO)
        options = ini(secret=..., secret_file="secret", api_base="https://alloconv.example/s")
        assert config_error(options, here=str(tmp_path)).option == "secret_file"

    def test_accepted_with_the_sandbox_on_loopback(self):
        sandbox = {"api_base": "http://127.0.0.1:6543/sandbox", "api_key": "sandbox-key"}
        config = parse_options(ini(secret=self.DEMO, **sandbox))
        assert config.secrets == (self.DEMO,)

    def test_refused_on_loopback_with_a_real_key(self):
        # an AlloConv reached through a local proxy (stunnel...) is on loopback too
        options = ini(secret=self.DEMO, api_base="http://127.0.0.1:8443/scripts")
        assert config_error(options).option == "secret"

    def test_every_secret_the_examples_print_is_known(self):
        """A secret added to an example must join PUBLISHED_SECRETS, or the check above
        would not know it."""
        root = Path(__file__).resolve().parent.parent
        examples = root / "examples"
        files = [root / "README.md", *sorted(examples.glob("*.ini")), *examples.glob("*.py")]
        files += examples.glob("*.md")  # not the sqlite files a demo run leaves there
        ini_line = re.compile(r"^\s*secret\s*=\s*([\w.~+/=-]+)\s*$", re.M)
        keyword = re.compile(r"\bsecret=[\"']([^\"']+)[\"']")
        written = set()
        for path in files:
            text = path.read_text()
            written.update(ini_line.findall(text), keyword.findall(text))
        assert self.DEMO in written  # the scan finds the demo's
        assert written <= PUBLISHED_SECRETS, written - PUBLISHED_SECRETS


class TestFiles:
    def test_secret_file_read_relative_to_here(self, tmp_path):
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "secret.txt").write_text(f"{SECRET}\n{OLD_SECRET}\n")
        config = parse_options(ini(secret=..., secret_file="conf/secret.txt"), here=str(tmp_path))
        assert config.secrets == (SECRET, OLD_SECRET)

    def test_api_key_file_read_relative_to_here(self, tmp_path):
        (tmp_path / "key").write_text(f"  {API_KEY}\n")
        config = parse_options(ini(api_key=..., api_key_file="key"), here=str(tmp_path))
        assert config.api_key == API_KEY

    def test_absolute_path_ignores_here(self, tmp_path):
        key = tmp_path / "key"
        key.write_text(API_KEY)
        config = parse_options(ini(api_key=..., api_key_file=str(key)), here="/nonexistent")
        assert config.api_key == API_KEY

    def test_without_here_reads_from_working_directory(self, tmp_path, monkeypatch):
        (tmp_path / "key").write_text(API_KEY)
        monkeypatch.chdir(tmp_path)
        assert parse_options(ini(api_key=..., api_key_file="key")).api_key == API_KEY

    @pytest.mark.parametrize("option", ["api_key_file", "secret_file"])
    def test_missing_file_is_named(self, tmp_path, option):
        plain = option.removesuffix("_file")
        error = config_error(ini(**{plain: ..., option: "nope.txt"}), here=str(tmp_path))
        assert error.option == option
        assert os.path.join(str(tmp_path), "nope.txt") in str(error)
        assert "cannot read" in str(error)

    def test_directory_instead_of_file_is_named(self, tmp_path):
        error = config_error(ini(secret=..., secret_file="."), here=str(tmp_path))
        assert error.option == "secret_file"

    def test_short_secret_in_file_names_the_file_option(self, tmp_path):
        (tmp_path / "secret").write_text("short\n")
        error = config_error(ini(secret=..., secret_file="secret"), here=str(tmp_path))
        assert error.option == "secret_file"

    def test_empty_key_file_refused(self, tmp_path):
        (tmp_path / "key").write_text("\n")
        error = config_error(ini(api_key=..., api_key_file="key"), here=str(tmp_path))
        assert error.option == "api_key_file"
        assert "empty" in str(error)

    def test_api_key_and_api_key_file_both_refused(self, tmp_path):
        (tmp_path / "key").write_text(API_KEY)
        error = config_error(ini(api_key_file="key"), here=str(tmp_path))
        assert error.option == "api_key"
        assert "not both" in str(error)


class TestApiKey:
    def test_stripped(self):
        assert parse_options(ini(api_key=f"  {API_KEY}\n")).api_key == API_KEY

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("two words", id="space"),
            pytest.param("key\x00", id="control"),
            pytest.param("line1\nline2", id="two-lines"),
        ],
    )
    def test_spaces_or_control_characters_refused(self, value):
        error = config_error(ini(api_key=value))
        assert error.option == "api_key"
        assert value not in str(error)


class TestPalier:
    @pytest.mark.parametrize("value", ["fra1", "bel2", " fra1 "])
    def test_accepted(self, value):
        assert parse_options(ini(palier=value, price_notice="1 €")).palier == value.strip()

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("fra-1", id="dash"),
            pytest.param("FRA1", id="upper-case"),
            pytest.param("a" * 33, id="too-long"),
            pytest.param("fra1&cle=x", id="query-injection"),
        ],
    )
    def test_refused(self, value):
        error = config_error(ini(palier=value))
        assert error.option == "palier"
        assert "palier code" in str(error)

    def test_several_paliers_each_with_its_price(self):
        config = parse_options(ini(palier="fra1 bel1", **{"price_notice.bel1": "2 € par code"}))
        assert config.paliers == ("fra1", "bel1")
        assert config.notice(0, "fr").startswith("3,00 €")
        assert config.notice(1, "fr") == "2 € par code"

    def test_a_palier_without_a_known_price_needs_one(self):
        error = config_error(ini(palier="fra1 bel1"))
        assert error.option == "price_notice.bel1"


class TestPrefixes:
    @pytest.mark.parametrize(
        "value, expected",
        [
            pytest.param("/premium", ("/premium",), id="one"),
            pytest.param("/premium /videos", ("/premium", "/videos"), id="two"),
            pytest.param("\n  /premium\n  /videos\n", ("/premium", "/videos"), id="ini-lines"),
            pytest.param("/premium/", ("/premium",), id="trailing-slash"),
            pytest.param("/", ("",), id="whole-site"),
            pytest.param(["/premium", "/videos/"], ("/premium", "/videos"), id="python-list"),
            pytest.param(("/premium",), ("/premium",), id="python-tuple"),
            pytest.param("/caf%C3%A9", ("/caf\xc3\xa9",), id="percent-encoded"),
        ],
    )
    def test_accepted(self, value, expected):
        assert parse_options(ini(prefixes=value)).prefixes == expected

    @pytest.mark.parametrize(
        "value, problem",
        [
            pytest.param("premium", "must start with '/'", id="no-leading-slash"),
            pytest.param("/premium?x=1", "plain path", id="query"),
            pytest.param("/premium#top", "plain path", id="fragment"),
            pytest.param(["/pre\tmium"], "plain path", id="tab"),
            pytest.param("/premium /premium/", "given twice", id="duplicate"),
            pytest.param("/caf%E9", "", id="percent-latin-1-not-utf-8"),
            pytest.param("/premium, /videos", "comma", id="comma-between"),
            pytest.param("/premium,/videos", "comma", id="comma-joined"),
            pytest.param(["/pre mium"], "plain path", id="space-inside"),
            pytest.param("https://example.com/premium", "no scheme", id="scheme"),
            pytest.param("//example.com/premium", "no host", id="host"),
        ],
    )
    def test_refused(self, value, problem):
        error = config_error(ini(prefixes=value))
        assert error.option == "prefixes"
        assert problem in str(error)


class TestDuration:
    @pytest.mark.parametrize(
        "value, seconds",
        [
            pytest.param("3600", 3600, id="bare-seconds"),
            pytest.param("90s", 90, id="seconds"),
            pytest.param("30m", 1800, id="minutes"),
            pytest.param("24h", 86400, id="hours"),
            pytest.param("7d", 7 * 86400, id="days"),
            pytest.param(" 2 H ", 7200, id="spaces-and-case"),
            pytest.param("400d", MAX_DURATION, id="400-days"),
            pytest.param(600, 600, id="python-int"),
            pytest.param(MAX_DURATION, MAX_DURATION, id="python-int-max"),
        ],
    )
    def test_accepted(self, value, seconds):
        config = parse_options(ini(duration=value, number_ttl=value))
        assert config.duration == seconds
        assert config.number_ttl == seconds

    @pytest.mark.parametrize(
        "value, problem",
        [
            pytest.param("0", "more than 0", id="zero"),
            pytest.param("0h", "more than 0", id="zero-hours"),
            pytest.param("-5", "not a duration", id="negative"),
            pytest.param("1.5h", "not a duration", id="fraction"),
            pytest.param("10w", "not a duration", id="weeks"),
            pytest.param("h", "not a duration", id="unit-only"),
            pytest.param("", "not a duration", id="empty"),
            pytest.param("1d2h", "not a duration", id="compound"),
            pytest.param("forever", "not a duration", id="word"),
            pytest.param("401d", "at most", id="over-400-days"),
            pytest.param(str(MAX_DURATION + 1), "at most", id="one-second-over"),
            pytest.param(0, "more than 0", id="python-zero"),
            pytest.param(-60, "more than 0", id="python-negative"),
            pytest.param(True, "not a duration", id="python-bool"),
        ],
    )
    @pytest.mark.parametrize("option", ["duration", "number_ttl"])
    def test_refused(self, option, value, problem):
        error = config_error(ini(**{option: value}))
        assert error.option == option
        assert problem in str(error)


class TestApiBase:
    @pytest.mark.parametrize(
        "value, expected",
        [
            pytest.param("https://api.example.com/scripts", None, id="https"),
            pytest.param(
                "https://api.example.com/scripts/",
                "https://api.example.com/scripts",
                id="trailing-slash-dropped",
            ),
            pytest.param("http://127.0.0.1:8080", None, id="http-ipv4-loopback"),
            pytest.param("http://127.0.0.2/x", None, id="http-other-127"),
            pytest.param("http://localhost:8080/", "http://localhost:8080", id="http-localhost"),
            pytest.param("http://LOCALHOST:8080", None, id="http-localhost-upper"),
            pytest.param("http://[::1]:8080", None, id="http-ipv6-loopback"),
            pytest.param("  https://api.example.com  ", "https://api.example.com", id="spaces"),
        ],
    )
    def test_accepted(self, value, expected):
        assert parse_options(ini(api_base=value)).api_base == (expected or value)

    @pytest.mark.parametrize(
        "value, problem",
        [
            pytest.param("http://www.alloconv.fr/scripts", "use https", id="http-real"),
            pytest.param("http://10.0.0.1", "use https", id="http-private-ip"),
            pytest.param(
                "http://localhost.evil.example", "use https", id="http-localhost-lookalike"
            ),
            pytest.param("http://127.0.0.1.evil.example", "use https", id="http-127-lookalike"),
            pytest.param("ftp://127.0.0.1", "not an http(s) URL", id="ftp"),
            pytest.param("www.alloconv.fr/scripts", "not an http(s) URL", id="no-scheme"),
            pytest.param("https://", "not an http(s) URL", id="no-host"),
            pytest.param("https://x.example/s?cle=1", "query or fragment", id="query"),
            pytest.param("https://x.example/s#x", "query or fragment", id="fragment"),
        ],
    )
    def test_refused(self, value, problem):
        error = config_error(ini(api_base=value))
        assert error.option == "api_base"
        assert problem in str(error)


class TestTimeout:
    @pytest.mark.parametrize(
        "value, seconds",
        [
            pytest.param("5", 5.0, id="string"),
            pytest.param("0.5", 0.5, id="fraction"),
            pytest.param(" 10 ", 10.0, id="spaces"),
            pytest.param(3, 3.0, id="python-int"),
            pytest.param(2.5, 2.5, id="python-float"),
            pytest.param("60", 60.0, id="max"),
        ],
    )
    def test_accepted(self, value, seconds):
        assert parse_options(ini(timeout=value)).timeout == seconds

    @pytest.mark.parametrize(
        "value, problem",
        [
            pytest.param("0", "more than 0", id="zero"),
            pytest.param("-1", "more than 0", id="negative"),
            pytest.param(0, "more than 0", id="python-zero"),
            pytest.param("61", "at most 60", id="too-long"),
            pytest.param("nan", "more than 0", id="nan"),
            pytest.param("inf", "at most 60", id="infinite"),
            pytest.param("5s", "not a number", id="with-unit"),
            pytest.param("soon", "not a number", id="junk"),
            pytest.param("", "not a number", id="empty"),
            pytest.param([5], "not a number", id="python-list"),
        ],
    )
    def test_refused(self, value, problem):
        error = config_error(ini(timeout=value))
        assert error.option == "timeout"
        assert problem in str(error)


class TestNumber:
    @pytest.mark.parametrize(
        "value, expected",
        [
            pytest.param("08 99 12 34 56", "08 99 12 34 56", id="phone"),
            pytest.param("  SMS CODE\n  au 81234 ", "SMS CODE au 81234", id="lines-joined"),
        ],
    )
    def test_whitespace_collapsed(self, value, expected):
        assert parse_options(ini(number=value)).number == expected


class TestPriceNotice:
    def test_given_notice_wins_over_default(self):
        config = parse_options(ini(price_notice="  2 €\n par code "))
        assert config.price_notice == "2 € par code"

    def test_required_for_palier_without_default(self):
        error = config_error(ini(palier="zzz9"))
        assert error.option == "price_notice"
        assert "'zzz9'" in str(error)

    def test_given_for_palier_without_default(self):
        assert parse_options(ini(palier="zzz9", price_notice="1 €")).price_notice == "1 €"


class TestCookieName:
    @pytest.mark.parametrize("value", ["alloconv_access", "paid-2", "A.b", " x "])
    def test_accepted(self, value):
        assert parse_options(ini(cookie_name=value)).cookie_name == value.strip()

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("two words", id="space"),
            pytest.param("a=b", id="equals"),
            pytest.param("a;b", id="semicolon"),
            pytest.param("a,b", id="comma"),
            pytest.param('"quoted"', id="quotes"),
            pytest.param("caf\xe9", id="non-ascii"),
            pytest.param("x" * 65, id="too-long"),
        ],
    )
    def test_refused(self, value):
        error = config_error(ini(cookie_name=value))
        assert error.option == "cookie_name"
        assert "not a valid cookie name" in str(error)


class TestCookieSecure:
    @pytest.mark.parametrize(
        "value, expected",
        [
            pytest.param("true", True, id="true"),
            pytest.param("TRUE", True, id="TRUE"),
            pytest.param("yes", True, id="yes"),
            pytest.param("on", True, id="on"),
            pytest.param("1", True, id="one"),
            pytest.param("false", False, id="false"),
            pytest.param("no", False, id="no"),
            pytest.param("off", False, id="off"),
            pytest.param("0", False, id="zero"),
            pytest.param("auto", None, id="auto"),
            pytest.param(" Auto ", None, id="auto-spaces"),
            pytest.param(True, True, id="python-true"),
            pytest.param(False, False, id="python-false"),
        ],
    )
    def test_accepted(self, value, expected):
        assert parse_options(ini(cookie_secure=value)).cookie_secure is expected

    @pytest.mark.parametrize("value", ["maybe", "", "2", "https", "truee"])
    def test_junk_refused(self, value):
        error = config_error(ini(cookie_secure=value))
        assert error.option == "cookie_secure"
        assert "true, false or auto" in str(error)


class TestLanguage:
    @pytest.mark.parametrize(
        "value, expected",
        [
            pytest.param("fr", "fr", id="fr"),
            pytest.param("en", "en", id="en"),
            pytest.param(" EN ", "en", id="case-and-spaces"),
        ],
    )
    def test_accepted(self, value, expected):
        assert parse_options(ini(language=value)).language == expected

    @pytest.mark.parametrize("value", ["de", "english", "fr_FR", ""])
    def test_refused(self, value):
        error = config_error(ini(language=value))
        assert error.option == "language"
        assert "fr, en" in str(error)


class TestScope:
    def test_depends_on_prefixes_not_on_their_order(self):
        one = parse_options(ini(prefixes="/a /b"))
        other = parse_options(ini(prefixes="/b /a"))
        third = parse_options(ini(prefixes="/a"))
        assert one.scope == other.scope
        assert one.scope != third.scope
