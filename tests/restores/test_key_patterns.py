"""The key pattern of a Redis restore (`--key-pattern`, the form's "Only keys matching"): it matches exactly the keys a
real Redis's KEYS and SCAN MATCH match, binary names included, and a pattern made to backtrack costs a bounded
number of steps."""

from __future__ import annotations

import random
import re

import pytest

from restores.redis_restore import KeyPattern, KeyPatternError, key_matcher
from tests.support.redis import AppRedis

# Names with the glob's own characters, bytes that are not UTF-8, NUL, the empty name, and UTF-8 letters.
KEYS = [
    b"",
    b"a",
    b"ab",
    b"abc",
    b"rq:job:1",
    b"rq:jobs",
    b"rq:queue:default",
    b"hello",
    b"hallo",
    b"hllo",
    b"a*b",
    b"a?b",
    b"a[b",
    b"a]b",
    b"a\\b",
    b"a-b",
    b"a^b",
    b"\x00",
    b"a\x00b",
    b"\xff",
    b"\xffab",
    b"\x80\x81",
    "ñandú".encode(),
    "ñ".encode(),
    b"n",
    b"]",
    b"-",
    b"^",
    b"\\",
    b"*",
    b"aaaaaaaaaaaaaaaaaaab",
]
PATTERNS = [
    "*",
    "**",
    "?",
    "??",
    "a*",
    "*b",
    "a*b",
    "a?b",
    "rq:job:*",
    "rq:*:*",
    "h?llo",
    "h[ae]llo",
    "h[^e]llo",
    "h[a-c]llo",
    "h[c-a]llo",
    r"a\*b",
    r"a\?b",
    r"a\[b",
    r"a\\b",
    "a[\\]]b",
    "a[-]b",
    "a[^-]b",
    "a[a-]]b",
    "a[\\-x]b",
    "[\\^]",
    "[^a]",
    "ñ*",
    "[ñ]*",
    "*\x00*",
    "a\\",
    "\\",
    "*a*a*a*a*a*a*a*a*b",
    "*a*?",
    "[*]",
    "[?]",
]


@pytest.fixture
def redis_keys(app_redis: AppRedis) -> AppRedis:
    for key in KEYS:
        app_redis.client.set(key, b"v")
    assert app_redis.client.dbsize() == len(KEYS)
    return app_redis


def _redis_matches(app_redis: AppRedis, pattern: str) -> tuple[set[bytes], set[bytes]]:
    client = app_redis.client
    return set(client.keys(pattern)), set(client.scan_iter(match=pattern, count=1000))


def test_patterns_match_the_keys_redis_matches(redis_keys: AppRedis) -> None:
    for pattern in PATTERNS:
        match = KeyPattern(pattern)
        keys, scanned = _redis_matches(redis_keys, pattern)
        assert keys == scanned, pattern
        assert {key for key in KEYS if match(key)} == keys, pattern


def test_random_patterns_match_the_keys_redis_matches(app_redis: AppRedis) -> None:
    """Patterns and names drawn from the characters that mean something to the glob: whatever our matcher accepts,
    Redis reads the same way; what it refuses is an unclosed or empty [], or a range with a non-ASCII end."""
    draw = random.Random(12)
    alphabet = ["a", "b", "*", "?", "[", "]", "^", "-", "\\", "ñ", "\x00"]
    key_bytes = [b"a", b"b", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\x00", b"\xff", b"\xc3", b"\xb1"]
    keys = {b"".join(draw.choices(key_bytes, k=draw.randint(1, 6))) for _ in range(400)}
    for key in keys:
        app_redis.client.set(key, b"v")
    compared = refused = 0
    for _ in range(600):
        pattern = "".join(draw.choices(alphabet, k=draw.randint(1, 7)))
        try:
            match = KeyPattern(pattern)
        except KeyPatternError as exc:
            assert re.match(r"(unclosed \[|empty \[\]|a range in \[\] must be between two ASCII)", str(exc)), exc
            refused += 1
            continue
        redis_keys, scanned = _redis_matches(app_redis, pattern)
        assert redis_keys == scanned, pattern
        assert {key for key in keys if match(key)} == redis_keys, pattern
        compared += 1
    assert compared > 300 and refused > 0  # the draw exercised both


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("job:[12", "unclosed [ in the key pattern 'job:[12'"),
        ("job:[a-]", "unclosed [ in the key pattern 'job:[a-]'"),  # Redis reads a-] as a range
        ("job:[1\\]", "unclosed ["),
        ("job:[]", "empty [] in the key pattern"),
        ("job:[^]", "empty [] in the key pattern"),
        ("job:[a-ñ]", "a range in [] must be between two ASCII characters"),
    ],
)
def test_patterns_redis_would_read_otherwise_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(KeyPatternError, match=re.escape(message)):
        key_matcher(pattern)


def test_a_pattern_made_to_backtrack_costs_a_bounded_number_of_steps() -> None:
    """`*a*a*a*a*a*a*a*a*b` against names of a's with no b: a regular expression made from the glob tried every way
    of splitting the a's between the stars (0.8 s per 40-byte name). The greedy walk takes at most
    len(name) x len(pattern) steps a name, and far fewer here."""
    pattern = "*a*a*a*a*a*a*a*a*b"
    match = KeyPattern(pattern)
    names = [b"a" * length for length in range(1, 200)] + [b"a" * 40 + b"c" * i for i in range(200)]
    assert not any(match(name) for name in names)
    bound = sum(len(name) * len(pattern) for name in names)
    assert match.steps <= bound
    assert match.steps <= 3 * sum(len(name) for name in names)  # linear in practice: one step a byte, and a little
    assert match(b"a" * 40 + b"b")


def test_an_empty_pattern_matches_every_key() -> None:
    match = key_matcher("")
    assert match(b"") and match(b"anything")
