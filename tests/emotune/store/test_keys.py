"""Object key rules (shared by both backends)."""

import pytest

from emotune.errors import InvalidInput
from emotune.store.keys import validate_key


@pytest.mark.parametrize("key", ["a", "a/b.c", "jobs/x-1/events/0000000001.json", "风格/温柔.yaml", "a b/c d",
                                 ".hidden/file", "x" * 1024, "a..b/c"])
def test_valid_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [("", "is empty"), ("/abs", "is absolute"), ("a/", "empty"), ("a//b", "empty"), ("..", "'..'"),
     ("a/../b", "'..'"), ("a/./b", "'.'"), ("a\\b", "backslash"), ("a\rb", "control character"),
     ("a\x7fb", "control character"), ("é" * 513, "longer than 1024 bytes")],
)
def test_invalid_keys_name_the_problem(key, reason):
    with pytest.raises(InvalidInput) as info:
        validate_key(key)
    assert reason in info.value.message and info.value.field == "key"


def test_prefix_mode_allows_empty_and_trailing_slash_only():
    assert validate_key("", prefix=True) == ""
    assert validate_key("jobs/", prefix=True) == "jobs/"
    assert validate_key("jo", prefix=True) == "jo"
    for bad in ("/", "../", "a//", "a/../"):
        with pytest.raises(InvalidInput):
            validate_key(bad, prefix=True)


def test_non_string_key_is_refused():
    with pytest.raises(InvalidInput, match="must be a string"):
        validate_key(b"bytes")  # type: ignore[arg-type]
