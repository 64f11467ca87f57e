"""Incremental detokenization and stop strings, with the real tokenizers of the packaged models."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from emotune.services.inference.textstream import REPLACEMENT_CHAR, IncrementalDecoder, StopMatcher

TEXTS = {
    "smollm_dir": "Hello there, friend! It's   a   spaced-out line.\nNew line: 3.14 ok",
    "gemma_dir": "今天好累呀～ 抱抱你🤗，先喝杯热茶吧。龘𠮷 Then rest 🦩!",
}


@pytest.mark.parametrize("model_fixture", sorted(TEXTS))
def test_token_by_token_deltas_rebuild_the_text(model_fixture, request):
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(model_fixture))
    text = TEXTS[model_fixture]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(lambda chunk: tokenizer.decode(chunk, skip_special_tokens=True))
    deltas = [decoder.push([token]) for token in ids]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any(REPLACEMENT_CHAR in delta for delta in deltas)
    if model_fixture == "gemma_dir":  # byte-fallback pieces of rare characters are held back, then released
        assert "" in deltas


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(piece) for piece in pieces) + matcher.flush()


def test_stop_string_split_across_pieces_never_leaks():
    matcher = StopMatcher(["<END>"])
    out = [matcher.feed(p) for p in ["Hello <", "EN", "D> never shown"]]
    assert out == ["Hello ", "", ""] and matcher.stopped


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    matcher = StopMatcher(["###"])
    assert matcher.feed("a #") == "a "  # "#" could start "###": held back
    assert matcher.feed("# b") == "## b"  # "## b" is no stop: everything is released
    assert matcher.feed("##") == ""
    assert matcher.flush() == "##" and not matcher.stopped


def test_earliest_of_several_stops_wins_and_flush_returns_pending():
    assert feed_all(StopMatcher(["world", "lo w"]), ["hel", "lo world"]) == "hel"
    assert feed_all(StopMatcher(["xyz"]), ["abc x"]) == "abc x"
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"
    matcher = StopMatcher(["\n\n"])
    assert feed_all(matcher, ["line one\n", "\nline two"]) == "line one" and matcher.stopped
