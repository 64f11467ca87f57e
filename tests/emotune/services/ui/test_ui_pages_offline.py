"""Page logic through Streamlit's AppTest, with no gateway running (a closed loopback port): the styles
editor/upload validation works offline, and an unreachable gateway is reported plainly without losing the chat."""

import pytest

from emotune.services.ui.chat import Conversation
from tests.support import free_port

BAD_STYLES = b"""styles:
  - name: gentle
    system_prompt: You are gentle.
    temperature: 1.5
  - name: sharp
    system_prompt: You are sharp.
    length: {min: 50, max: 10}
"""


@pytest.fixture
def closed_gateway(ui_app):
    """The UI pointed at a loopback port where nothing listens; returns (make AppTest, the API base shown)."""
    port = free_port()
    return (lambda: ui_app(EMOTUNE_GATEWAY_URL=f"http://127.0.0.1:{port}", EMOTUNE_UI_API_KEY="sk-operator"),
            f"http://127.0.0.1:{port}/v1")


def test_chat_keeps_the_conversation_when_the_gateway_is_unreachable(closed_gateway):
    app, api_base = closed_gateway
    at = app()
    chat = Conversation()
    chat.add_user("hello there")
    chat.add_answer("general Kenobi", model="smollm2-135m")
    at.session_state["chat"] = chat
    at.run()
    assert not at.exception
    assert any(f"Cannot reach the gateway at {api_base}" in e.value for e in at.error)
    assert [m.markdown[0].value for m in at.chat_message] == ["hello there", "general Kenobi"]
    assert at.chat_input(key="chat_input").disabled


def test_invalid_styles_upload_names_field_and_line(closed_gateway):
    at = closed_gateway[0]()
    at.switch_page("views/fine_tune.py").run()
    assert not at.exception
    at.file_uploader(key="styles_upload").set_value(("mine.yaml", BAD_STYLES, "application/yaml"))
    at.run()
    errors = [e.value for e in at.error]
    assert any("Invalid styles document" in e and "line 7" in e and "`styles[1].length`" in e
               and "greater than max" in e for e in errors), errors
    assert ">" in at.code[0].value and "length: {min: 50, max: 10}" in at.code[0].value
    assert at.button(key="launch").disabled
    # fixing the document in the editor clears the error and lists the styles
    at.text_area(key="styles_text").input(BAD_STYLES.decode().replace("min: 50", "min: 5")).run()
    assert not any("Invalid styles" in e.value for e in at.error)
    assert "2 style(s) valid: gentle, sharp" in at.success[0].value
    assert list(at.dataframe[0].value["style"]) == ["gentle", "sharp"]
    # no served base model (gateway down): still not launchable, and the reason is on the page
    assert at.button(key="launch").disabled
    assert any("Cannot reach the gateway" in e.value for e in at.error)


def test_unreadable_upload_is_refused_readably(closed_gateway):
    at = closed_gateway[0]()
    at.switch_page("views/fine_tune.py").run()
    at.file_uploader(key="styles_upload").set_value(("win.yaml", BAD_STYLES.decode().encode("utf-16"),
                                                     "application/yaml"))
    at.run()
    assert any("Cannot read win.yaml" in e.value and "UTF-16" in e.value for e in at.error)


def test_examples_shipped_in_the_repo_load_into_the_editor(closed_gateway):
    at = closed_gateway[0]()
    at.switch_page("views/fine_tune.py").run()
    examples = at.selectbox(key="styles_example").options[1:]
    assert examples, "examples/ holds no valid styles document"
    at.selectbox(key="styles_example").select(examples[0]).run()
    assert at.text_area(key="styles_text").value.strip()
    assert "style(s) valid" in at.success[0].value
