"""The access token: issued on a good code, refused when expired, tampered, foreign or retired."""

import pytest
from clock import FakeClock
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode

from alloconv_gate import tokens as token_module
from alloconv_gate.tokens import MAX_CHECKS, MAX_SKEW, MAX_TOKENS, SEPARATOR, AccessTokens

NEW = "new-secret-" + "n" * 32
OLD = "old-secret-" + "o" * 32
OTHER = "other-secret-" + "x" * 32
SCOPE = "default:/premium"
DAY = 86400


@pytest.fixture
def clock():
    return FakeClock()


def tokens(clock, secrets=(NEW,), scope=SCOPE, duration=DAY) -> AccessTokens:
    """The tokens of the gate ``scope`` names (its name, then its prefixes)."""
    return AccessTokens(list(secrets), scope.split(":", 1)[1].split(), duration, clock=clock)


def same_signature(token: str, other: str) -> bool:
    """Whether ``other`` is ``token`` spelt differently: same signed text, same signature bytes.

    Base64 decoding ignores the unused low bits of the last character, so a few spellings of
    the last character of a signature decode to the same bytes. That gives nothing new: it is
    the same token, for the same gate, ending at the same time.
    """
    signed, _, signature = token.rpartition(".")
    other_signed, _, other_signature = other.rpartition(".")
    return signed == other_signed and base64_decode(signature) == base64_decode(other_signature)


class TestIssueAndCheck:
    def test_check_gives_the_end_time(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        assert gate.check(token) == int(clock.now) + DAY

    def test_issue_with_explicit_end(self, clock):
        gate = tokens(clock)
        until = int(clock.now) + 60
        assert gate.check(gate.issue(until=until)) == until

    def test_valid_until_just_before_duration(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        clock.advance(DAY - 1)
        assert gate.check(token) == int(clock.now) + 1

    def test_expired_exactly_at_duration(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        clock.advance(DAY)
        assert gate.check(token) is None

    def test_expired_long_after(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        clock.advance(30 * DAY)
        assert gate.check(token) is None

    def test_end_time_in_the_past_refused(self, clock):
        gate = tokens(clock)
        assert gate.check(gate.issue(until=int(clock.now) - 1)) is None

    def test_end_time_beyond_duration_still_ends_at_duration(self, clock):
        # Whatever end time a token carries, the server refuses it ``duration`` after issue.
        gate = tokens(clock)
        token = gate.issue(until=int(clock.now) + 10 * DAY)
        clock.advance(DAY + 1)
        assert gate.check(token) is None

    def test_shorter_duration_after_restart_applies_to_old_tokens(self, clock):
        token = tokens(clock, duration=7 * DAY).issue()
        clock.advance(2 * 3600)
        assert tokens(clock, duration=3600).check(token) is None
        assert tokens(clock, duration=7 * DAY).check(token) is not None

    def test_token_from_the_future_refused(self, clock):
        future = FakeClock(clock.now + 3600)
        token = tokens(future).issue()
        assert tokens(clock).check(token) is None

    def test_a_server_whose_clock_is_a_little_behind_accepts(self, clock):
        token = tokens(clock).issue()
        behind = FakeClock(clock.now - MAX_SKEW + 1)
        assert tokens(behind).check(token) == int(clock.now) + DAY

    def test_a_server_whose_clock_is_far_behind_refuses(self, clock):
        token = tokens(clock).issue()
        assert tokens(FakeClock(clock.now - MAX_SKEW - 2)).check(token) is None

    def test_tokens_are_cookie_safe(self, clock):
        token = tokens(clock).issue()
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
        )
        assert SEPARATOR not in token
        assert len(token) < 200


class TestBadValues:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(None, id="none"),
            pytest.param("", id="empty"),
            pytest.param("garbage", id="garbage"),
            pytest.param("a.b.c", id="three-parts"),
            pytest.param("....", id="dots"),
            pytest.param("~~~", id="separators"),
            pytest.param("é" * 50, id="non-ascii"),
            pytest.param("A" * 4000, id="long"),
            pytest.param("eyJhIjoxfQ.ZZZZZZ.c2lnbmF0dXJl", id="well-shaped-forgery"),
        ],
    )
    def test_refused(self, clock, value):
        assert tokens(clock).check(value) is None

    def test_every_single_character_flip_refused(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        for index, char in enumerate(token):
            for replacement in "A0_-.~z":
                if replacement == char:
                    continue
                mutated = token[:index] + replacement + token[index + 1 :]
                assert gate.check(mutated) is None or same_signature(token, mutated), (
                    index,
                    replacement,
                )

    def test_every_truncation_refused(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        for length in range(len(token)):
            assert gate.check(token[:length]) is None, length

    def test_extra_characters_appended_refused(self, clock):
        gate = tokens(clock)
        assert gate.check(gate.issue() + "A") is None

    def test_end_time_swapped_between_tokens_refused(self, clock):
        # Take the payload of a later token and the signature of an earlier one.
        gate = tokens(clock)
        early = gate.issue(until=int(clock.now) + 60)
        late = gate.issue(until=int(clock.now) + DAY)
        payload = late.split(".")[0]
        forged = ".".join([payload, *early.split(".")[1:]])
        assert gate.check(forged) is None


class TestSecrets:
    def test_signed_with_another_secret_refused(self, clock):
        token = tokens(clock, secrets=(OTHER,)).issue()
        assert tokens(clock, secrets=(NEW,)).check(token) is None

    def test_rotation_old_secret_second_still_verifies(self, clock):
        before = tokens(clock, secrets=(OLD,)).issue()
        rotated = tokens(clock, secrets=(NEW, OLD))
        assert rotated.check(before) == int(clock.now) + DAY

    def test_rotation_new_secret_signs(self, clock):
        after = tokens(clock, secrets=(NEW, OLD)).issue()
        assert tokens(clock, secrets=(NEW,)).check(after) is not None
        assert tokens(clock, secrets=(OLD,)).check(after) is None

    def test_removing_the_old_secret_retires_its_tokens(self, clock):
        before = tokens(clock, secrets=(OLD,)).issue()
        assert tokens(clock, secrets=(NEW,)).check(before) is None


class TestScope:
    def test_other_gate_with_same_secret_refused(self, clock):
        videos = tokens(clock, scope="default:/videos").issue()
        assert tokens(clock, scope=SCOPE).check(videos) is None

    def test_plain_itsdangerous_token_with_same_secret_refused(self, clock):
        # A token some other part of the site signs with the same secret opens nothing here.
        foreign = URLSafeTimedSerializer(NEW).dumps(int(clock.now) + DAY)
        assert tokens(clock).check(foreign) is None

    def test_both_gates_read_one_shared_cookie(self, clock):
        premium = tokens(clock, scope=SCOPE)
        videos = tokens(clock, scope="default:/videos")
        cookie = videos.cookie_value(videos.issue(), premium.cookie_value(premium.issue(), None))
        assert premium.check(cookie) is not None
        assert videos.check(cookie) is not None


class TestCookieValue:
    def test_without_existing_cookie_is_the_token(self, clock):
        gate = tokens(clock)
        token = gate.issue()
        assert gate.cookie_value(token, None) == token
        assert gate.cookie_value(token, "") == token

    def test_keeps_other_gates_tokens(self, clock):
        premium = tokens(clock, scope=SCOPE)
        videos = tokens(clock, scope="default:/videos")
        videos_token = videos.issue()
        value = premium.cookie_value(premium.issue(), videos_token)
        assert value.split(SEPARATOR)[1:] == [videos_token]
        assert videos.check(value) is not None

    def test_drops_own_old_tokens(self, clock):
        gate = tokens(clock)
        old = gate.issue()
        clock.advance(DAY + 10)  # expired, but still this gate's
        new = gate.issue()
        assert gate.cookie_value(new, old) == new

    def test_drops_own_tokens_signed_with_a_rotated_secret(self, clock):
        old = tokens(clock, secrets=(OLD,)).issue()
        rotated = tokens(clock, secrets=(NEW, OLD))
        new = rotated.issue()
        assert rotated.cookie_value(new, old) == new

    def test_new_token_first(self, clock):
        premium = tokens(clock, scope=SCOPE)
        videos = tokens(clock, scope="default:/videos")
        new = premium.issue()
        assert premium.cookie_value(new, videos.issue()).split(SEPARATOR)[0] == new

    @pytest.mark.parametrize(
        "junk",
        [
            pytest.param("short", id="too-short"),
            pytest.param("has spaces in it and is long", id="spaces"),
            pytest.param('"quoted-value-long-enough"', id="quotes"),
            pytest.param("x" * 1201, id="too-long"),
            pytest.param("", id="empty"),
        ],
    )
    def test_drops_junk(self, clock, junk):
        gate = tokens(clock)
        new = gate.issue()
        assert gate.cookie_value(new, junk) == new

    def test_many_junk_tokens_are_bounded(self, clock):
        gate = tokens(clock)
        new = gate.issue()
        existing = SEPARATOR.join(f"junk-token-number-{i:04d}" for i in range(500))
        value = gate.cookie_value(new, existing)
        parts = value.split(SEPARATOR)
        assert len(parts) <= MAX_TOKENS
        assert parts[0] == new
        assert gate.check(value) is not None
        assert len(value) < 4096  # fits in a cookie

    def test_check_finds_a_good_token_behind_any_number_of_others(self, clock, monkeypatch):
        # A sibling subdomain can set cookies of our name that the browser sends first:
        # each page view checks MAX_CHECKS more of them, remembered as bad, until the
        # good one is reached.
        gate = tokens(clock)
        token = gate.issue()
        forged = tokens(clock, secrets=(OTHER,))
        junk = [forged.issue(until=int(clock.now) + i + 60) for i in range(3 * MAX_CHECKS)]
        checks = []
        original = gate._signed
        monkeypatch.setattr(gate, "_signed", lambda *a: checks.append(a) or original(*a))
        value = SEPARATOR.join([*junk, token])
        views = [gate.check(value) for _ in range(4)]
        assert views == [None, None, None, int(clock.now) + DAY]
        assert len(checks) == 3 * MAX_CHECKS + 1  # never more than MAX_CHECKS a view


NAME = "alloconv_access"
OTHER_COOKIES = "_ga=GA1.1.123456789.1700000000; lang=fr"


class TestCookieHeader:
    """A whole Cookie header, as every page view sends it, checked (and remembered)."""

    def test_a_good_token_among_other_cookies_grants(self, clock):
        gate = tokens(clock)
        header = f"{OTHER_COOKIES}; {NAME}={gate.issue()}"
        assert gate.check_cookie(header, NAME) == int(clock.now) + DAY
        assert gate.check_cookie(header, NAME) == int(clock.now) + DAY

    def test_a_remembered_header_is_refused_once_access_ends(self, clock):
        gate = tokens(clock, duration=3600)
        header = f"{NAME}={gate.issue()}; {OTHER_COOKIES}"
        assert gate.check_cookie(header, NAME) is not None
        clock.advance(3599)
        assert gate.check_cookie(header, NAME) is not None
        clock.advance(1)
        assert gate.check_cookie(header, NAME) is None

    def test_a_remembered_header_opens_no_other_mount(self, clock):
        gate = tokens(clock)
        header = f"{NAME}={gate.issue(mount='/cheap')}"
        assert gate.check_cookie(header, NAME, "/cheap") is not None
        assert gate.check_cookie(header, NAME, "/dear") is None
        assert gate.check_cookie(header, NAME) is None

    def test_when_the_first_token_ends_a_later_one_still_counts(self, clock):
        gate = tokens(clock)
        short = gate.issue(until=int(clock.now) + 60)
        header = f"{NAME}={short}; {NAME}={gate.issue()}"
        assert gate.check_cookie(header, NAME) == int(clock.now) + 60
        clock.advance(61)
        assert gate.check_cookie(header, NAME) == int(clock.now) - 61 + DAY

    @pytest.mark.parametrize(
        "header",
        [
            "",
            OTHER_COOKIES,
            f"x{NAME}=" + "{token}",  # another cookie whose name ends with ours
            f"{NAME}x=" + "{token}",
            f"{NAME}=" + "{token}A",
            f"{NAME}=" + "{other}",
        ],
    )
    def test_refused_without_a_good_token_of_ours(self, clock, header):
        gate = tokens(clock)
        header = header.format(token=gate.issue(), other=tokens(clock, secrets=(OTHER,)).issue())
        assert gate.check_cookie(header, NAME) is None
        assert gate.check_cookie(header, NAME) is None

    def test_a_long_header_is_checked_all_the_same(self, clock):
        gate = tokens(clock, duration=3600)
        header = "; ".join(f"c{i}={'v' * 40}" for i in range(200)) + f"; {NAME}={gate.issue()}"
        assert len(header) > 8000
        assert gate.check_cookie(header, NAME) is not None
        clock.advance(3600)
        assert gate.check_cookie(header, NAME) is None

    def test_what_is_remembered_is_bounded(self, clock, monkeypatch):
        monkeypatch.setattr(token_module, "MAX_REMEMBERED_HEADERS", 10)
        gate = tokens(clock)
        token = gate.issue()
        for i in range(25):
            assert gate.check_cookie(f"n={i}; {NAME}={token}", NAME) is not None
        assert len(gate._granting) <= 10

    def test_a_remembered_header_counts_for_the_cookie_name_it_was_read_for(self, clock):
        gate = tokens(clock)
        header = f"{NAME}={gate.issue()}"
        assert gate.check_cookie(header, NAME) is not None
        assert gate.check_cookie(header, "another_name") is None


tokens_clock = FakeClock()
GATE = tokens(tokens_clock)
TOKEN = GATE.issue()


class TestProperties:
    @given(
        st.integers(min_value=0, max_value=len(TOKEN) - 1),
        st.characters(codec="utf-8", exclude_characters="\x00"),
    )
    def test_any_single_character_change_fails(self, index, char):
        mutated = TOKEN[:index] + char + TOKEN[index + 1 :]
        if mutated != TOKEN:
            assert GATE.check(mutated) is None or same_signature(TOKEN, mutated)

    @given(st.integers(min_value=0, max_value=len(TOKEN)), st.text(min_size=1, max_size=3))
    def test_any_insertion_in_signed_text_fails(self, index, text):
        # Insertions into the payload or timestamp change what was signed.
        signed_length = TOKEN.rindex(".")
        mutated = TOKEN[: min(index, signed_length)] + text + TOKEN[min(index, signed_length) :]
        assert GATE.check(mutated) is None or SEPARATOR in text

    @given(st.integers(min_value=1, max_value=10 * DAY))
    def test_valid_exactly_until_duration(self, duration):
        clock = FakeClock()
        gate = tokens(clock, duration=duration)
        token = gate.issue()
        clock.advance(duration - 1)
        assert gate.check(token) is not None
        clock.advance(1)
        assert gate.check(token) is None


class TestManyPrefixes:
    def test_a_token_for_many_prefixes_is_compressed_and_still_opens(self, clock):
        prefixes = [f"/premium/section-{n:02d}" for n in range(30)]
        gate = AccessTokens([NEW], prefixes, DAY, clock=clock)
        token = gate.issue()
        assert token.startswith(".")  # itsdangerous compressed the payload
        header = f"{NAME}={token}"
        assert gate.check_cookie(header, NAME, prefix="/premium/section-29") is not None
        assert gate.check_cookie(header, NAME, prefix="/premium/other") is None


class TestHostileHeaders:
    def test_forgeries_that_claim_nothing_useful_cost_no_signature_check(self, clock, monkeypatch):
        gate = tokens(clock)
        expired = tokens(clock, secrets=(OTHER,)).issue(until=int(clock.now) - 1)
        elsewhere = tokens(clock, secrets=(OTHER,), scope="default:/videos").issue()
        checked = []
        original = gate._signed
        monkeypatch.setattr(gate, "_signed", lambda *a: checked.append(a) or original(*a))
        header = "; ".join(f"{NAME}={t}" for t in [expired, elsewhere] * 50)
        assert gate.check_cookie(header, NAME) is None
        assert checked == []
