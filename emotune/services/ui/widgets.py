"""Streamlit pieces shared by the pages: the visitor's API key, the gateway handle, the model/style picker,
sampling controls.

The UI holds no key of its own unless the operator sets ``EMOTUNE_UI_API_KEY``: each visitor enters theirs, which
lives in their Streamlit session only (``st.session_state``; never written anywhere, gone with the session).
"""

from __future__ import annotations

import hashlib

import streamlit as st

from emotune.services.ui.config import UISettings
from emotune.services.ui.gateway_client import Gateway, GatewayError, Sampling
from emotune.services.ui.models import ModelChoice, find_choice, group_models


@st.cache_resource
def settings() -> UISettings:
    return UISettings()


KEY_STATE = "visitor_api_key"  # the visitor's key, in their session only
_GATEWAY_STATE = "visitor_gateway"


@st.cache_resource
def shared_gateway() -> Gateway:
    """The gateway handle with the operator's EMOTUNE_UI_API_KEY (shared by every session)."""
    return Gateway(settings())


def ask_for_api_key() -> None:
    """Without an operator-configured key: the visitor's own key, asked for in the sidebar; the page stops (and
    calls nothing) until there is one."""
    if settings().ui_api_key is not None:
        return
    with st.sidebar:
        entered = st.text_input("Your API key", type="password", key=KEY_STATE, placeholder="sk-…",
                                help="Your emotune API key. It is sent to the gateway with your requests and kept "
                                     "in this browser session only.")
    if not entered:
        st.info("Enter your emotune API key in the sidebar to chat and run jobs. The UI has no key of its own.",
                icon="🔑")
        st.stop()


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def gateway() -> Gateway:
    """This session's gateway handle: the visitor's key, or the operator's EMOTUNE_UI_API_KEY."""
    if settings().ui_api_key is not None:
        return shared_gateway()
    key = st.session_state.get(KEY_STATE, "")
    held = st.session_state.get(_GATEWAY_STATE)
    if held is None or held[0] != _key_id(key):
        if held is not None:
            held[1].close()
        held = (_key_id(key), Gateway(settings(), api_key=key or None))
        st.session_state[_GATEWAY_STATE] = held
    return held[1]


@st.cache_data(ttl=10, show_spinner=False)
def _model_ids(key_id: str, _gateway: Gateway) -> list[str]:
    """Cached per key: one visitor's answer is never another's."""
    return _gateway.model_ids()


def models() -> list[ModelChoice]:
    """The gateway's models, grouped; raises GatewayError (not cached, so the next run asks again)."""
    handle = gateway()
    return group_models(_model_ids(_key_id(st.session_state.get(KEY_STATE, "")), handle))


def refresh_models() -> None:
    _model_ids.clear()


def show_error(err: GatewayError) -> None:
    icon = {"auth": "🔑", "not_found": "🔍", "overloaded": "⏳", "unreachable": "🔌"}.get(err.kind, "⚠️")
    st.error(err.message, icon=icon)


def model_picker(key: str, choices: list[ModelChoice], *, preselect: str | None = None) -> str:
    """Model then style selectboxes; returns the model id to send (``<model>`` or ``<model>:<style>``)."""
    index, style = find_choice(choices, preselect)
    choice = st.selectbox("Model", choices, index=index, key=f"{key}_model",
                          format_func=lambda c: c.name + (" (fine-tuned)" if c.fine_tuned else ""))
    options = choice.style_options
    style_index = options.index(style) if style in options else 0
    picked = st.selectbox("Style", options, index=style_index, key=f"{key}_style_{choice.name}")
    return choice.model_id(picked)


def sampling_controls(key: str) -> Sampling:
    return Sampling(
        temperature=st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, key=f"{key}_temperature",
                              help="0 = always the most likely token"),
        top_p=st.slider("Top p", 0.05, 1.0, 1.0, 0.05, key=f"{key}_top_p"),
        max_tokens=st.number_input("Max tokens", 1, 4096, settings().ui_default_max_tokens, 16,
                                   key=f"{key}_max_tokens"),
    )
