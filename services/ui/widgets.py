"""Streamlit pieces shared by the pages: the gateway handle, the model/style picker, sampling controls."""

from __future__ import annotations

import streamlit as st

from services.ui.config import UISettings
from services.ui.gateway import Gateway, GatewayError, Sampling
from services.ui.models import ModelChoice, find_choice, group_models


@st.cache_resource
def settings() -> UISettings:
    return UISettings()


@st.cache_resource
def gateway() -> Gateway:
    return Gateway(settings())


@st.cache_data(ttl=10, show_spinner=False)
def _model_ids() -> list[str]:
    return gateway().model_ids()


def models() -> list[ModelChoice]:
    """The gateway's models, grouped; raises GatewayError (not cached, so the next run asks again)."""
    return group_models(_model_ids())


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
