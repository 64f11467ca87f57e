"""Compare: the same prompt to two models (base vs fine-tuned, or two styles), both answers streamed side by
side. Each side keeps its own conversation, so follow-up prompts are multi-turn on both sides."""

from __future__ import annotations

import streamlit as st

from emotune.services.ui import widgets
from emotune.services.ui.chat import Message, Round, side_conversation
from emotune.services.ui.gateway_client import ChatStream, GatewayError
from emotune.services.ui.streams import interleave

SIDES = ("left", "right")
rounds: list[Round] = st.session_state.setdefault("compare_rounds", [])

st.title("⚖️ Compare")

with st.sidebar:
    sampling = widgets.sampling_controls("compare")
    system_prompt = st.text_area("System prompt override (both sides)", key="compare_system_prompt", height=90)
    if st.button("Clear", key="compare_clear", width="stretch"):
        rounds.clear()
        st.rerun()

try:
    choices = widgets.models()
except GatewayError as err:
    widgets.show_error(err)
    choices = []

picked: dict[str, str] = {}
if choices:
    for side, column in zip(SIDES, st.columns(2)):
        with column:
            # Default: the base model on the left, its first style (or the next model) on the right.
            default = None if side == "left" else next(
                (c.model_id(c.styles[0]) for c in choices if c.styles),
                choices[min(1, len(choices) - 1)].name)
            picked[side] = widgets.model_picker(f"compare_{side}", choices, preselect=default)
else:
    st.info("No model to compare: the gateway serves none or cannot be reached.")


def show_round(round_: Round) -> None:
    with st.chat_message("user"):
        st.markdown(round_.prompt)
    for side, column in zip(SIDES, st.columns(2)):
        with column:
            answer = round_.answers.get(side)
            if answer:
                st.markdown(answer.content)
                st.caption(f"`{answer.model}`" + (" · cut at max tokens" if answer.finish_reason == "length"
                                                  else ""))
            if side in round_.errors:
                st.error(round_.errors[side], icon="⚠️")


def run_round(round_: Round) -> None:
    """Stream every side at once into its own column."""
    requests = {side: side_conversation(rounds, side).request_messages(system_prompt) for side in picked}
    opened: dict[str, ChatStream] = {}

    def opener(side: str):
        def open_stream() -> ChatStream:
            opened[side] = widgets.gateway().stream_chat(picked[side], requests[side], sampling)
            return opened[side]
        return open_stream

    with st.chat_message("user"):
        st.markdown(round_.prompt)
    columns = dict(zip(SIDES, st.columns(2)))
    slots = {side: columns[side].empty() for side in picked}
    texts = {side: "" for side in picked}
    for event in interleave({side: opener(side) for side in picked}):
        side = event.key
        if not event.done:
            texts[side] += event.text
            slots[side].markdown(texts[side] + "▌")
            continue
        slots[side].markdown(texts[side])
        if event.error is not None:
            round_.errors[side] = (event.error.message if isinstance(event.error, GatewayError)
                                   else f"{type(event.error).__name__}: {event.error}")
        else:
            round_.answers[side] = Message("assistant", texts[side], model=picked[side],
                                           finish_reason=opened[side].finish_reason)
    st.rerun()


for past in rounds:
    show_round(past)

prompt = st.chat_input("Prompt for both models", key="compare_input", disabled=not picked)
if prompt and prompt.strip() and picked:
    rounds.append(Round(prompt.strip()))
    run_round(rounds[-1])
