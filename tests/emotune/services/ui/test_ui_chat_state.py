"""Chat state: the whole conversation is sent every turn, failures keep it, Compare sides are multi-turn."""

import pytest

from emotune.services.ui.chat import Conversation, Message, Round, side_conversation


def test_request_carries_the_whole_history_and_system_override():
    chat = Conversation()
    chat.add_user("My name is Alice.")
    chat.add_answer("Nice to meet you, Alice!", model="m")
    chat.add_user("What is my name?")
    assert chat.request_messages("  Be brief.  ") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Nice to meet you, Alice!"},
        {"role": "user", "content": "What is my name?"},
    ]
    assert chat.request_messages("")[0]["role"] == "user"


def test_failed_answer_keeps_the_message_and_strict_alternation():
    chat = Conversation()
    chat.add_user("first")
    chat.error = "The gateway is overloaded (429)"
    assert chat.awaiting_answer
    chat.add_user("second")  # typed while the first is unanswered
    assert chat.error is None
    assert [m.content for m in chat.messages] == ["first", "second"]
    assert chat.request_messages() == [{"role": "user", "content": "first\n\nsecond"}]


def test_regenerate_drops_only_the_last_answer():
    chat = Conversation()
    assert not chat.prepare_regenerate()
    chat.add_user("q1")
    chat.add_answer("a1", model="m")
    chat.add_user("q2")
    chat.add_answer("a2", model="m")
    assert chat.prepare_regenerate()
    assert [m.content for m in chat.messages] == ["q1", "a1", "q2"]
    with pytest.raises(ValueError):
        chat.add_user("   ")
    chat.clear()
    assert chat.messages == [] and chat.transcript() == ""


def test_compare_sides_keep_their_own_answers():
    rounds = [Round("hi", answers={"left": Message("assistant", "L1", "a"), "right": Message("assistant", "R1", "b")}),
              Round("again", answers={"left": Message("assistant", "L2", "a")}, errors={"right": "boom"}),
              Round("third")]
    left = side_conversation(rounds, "left").request_messages()
    right = side_conversation(rounds, "right").request_messages()
    assert [m["content"] for m in left] == ["hi", "L1", "again", "L2", "third"]
    assert [m["content"] for m in right] == ["hi", "R1", "again\n\nthird"]
