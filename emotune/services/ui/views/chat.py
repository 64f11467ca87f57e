"""Chat: multi-turn, streamed, with the whole conversation sent every turn; model/style picker, sampling,
system prompt override, clear / regenerate / copy. Gateway errors are shown without losing the conversation."""

from __future__ import annotations

import streamlit as st

from emotune.services.ui import widgets
from emotune.services.ui.chat import Conversation, Message
from emotune.services.ui.gateway_client import GatewayError

conversation: Conversation = st.session_state.setdefault("chat", Conversation())

st.title("💬 Chat")

with st.sidebar:
    try:
        choices = widgets.models()
        if not choices:
            st.info("The gateway serves no model yet.")
    except GatewayError as err:
        choices = []
        widgets.show_error(err)
    model_id = widgets.model_picker("chat", choices, preselect=st.query_params.get("model")) if choices else None
    if st.button("Reload models", key="chat_reload_models"):
        widgets.refresh_models()
        st.rerun()
    sampling = widgets.sampling_controls("chat")
    system_prompt = st.text_area(
        "System prompt override", key="chat_system_prompt", height=90,
        help="Sent as the system message of every turn. With a <model>:<style> id the gateway applies the "
             "style's own prompt unless you override it here.",
    )
    clear_col, regen_col = st.columns(2)
    if clear_col.button("Clear", key="chat_clear", width="stretch"):
        conversation.clear()
        st.rerun()
    regenerate = regen_col.button("Regenerate", key="chat_regenerate", width="stretch",
                                  disabled=not conversation.messages)
    st.download_button("Download transcript", conversation.transcript(), file_name="emotune-chat.txt",
                       key="chat_download", disabled=not conversation.messages)


def show(message: Message) -> None:
    with st.chat_message(message.role):
        st.markdown(message.content)
        if message.role == "assistant":
            note = f"`{message.model}`"
            if message.finish_reason == "length":
                note += " · cut at max tokens"
            left, right = st.columns([6, 1])
            left.caption(note)
            with right.popover("Copy", width="stretch"):
                st.code(message.content, language=None, wrap_lines=True)


def answer(model: str) -> None:
    """Stream the answer to the conversation so far; on failure keep everything and record the error."""
    with st.chat_message("assistant"):
        try:
            stream = widgets.gateway().stream_chat(model, conversation.request_messages(system_prompt), sampling)
            text = st.write_stream(stream)
        except GatewayError as err:
            conversation.error = err.message
        else:
            conversation.add_answer(text if isinstance(text, str) else "".join(map(str, text)), model,
                                    stream.finish_reason)
    st.rerun()


for message in conversation.messages:
    show(message)
if conversation.error:
    st.error(conversation.error, icon="⚠️")
    if conversation.awaiting_answer:
        st.caption("Your message is kept: press Regenerate to try again, or send another message.")

prompt = st.chat_input("Message", key="chat_input", disabled=model_id is None)
if prompt and prompt.strip() and model_id:
    conversation.add_user(prompt)
    show(conversation.messages[-1])
    answer(model_id)
elif regenerate and model_id and conversation.prepare_regenerate():
    answer(model_id)
