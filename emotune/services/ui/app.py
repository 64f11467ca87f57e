"""emotune UI entry point (``streamlit run emotune/services/ui/app.py``, or ``python -m emotune.services.ui``).

Three pages, all talking only to the gateway: Chat, Compare (two models side by side) and Fine-tune (styles ->
fine-tuning job -> served model). Each visitor's own API key (kept in their session) is what they call it with,
unless the operator configured EMOTUNE_UI_API_KEY for everyone.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this file's folder on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st

from emotune.services.ui import widgets

# Not "pages/": Streamlit would also serve that folder's files as pages of their own (a first visit to
# /fine_tune would then run views/fine_tune.py without this entry point).
VIEWS = Path(__file__).parent / "views"
CHAT_PAGE = st.Page(VIEWS / "chat.py", title="Chat", icon="💬", default=True)
COMPARE_PAGE = st.Page(VIEWS / "compare.py", title="Compare", icon="⚖️")
FINE_TUNE_PAGE = st.Page(VIEWS / "fine_tune.py", title="Fine-tune", icon="🛠️")

st.set_page_config(page_title="emotune", page_icon="💬", layout="wide")
page = st.navigation([CHAT_PAGE, COMPARE_PAGE, FINE_TUNE_PAGE])
with st.sidebar:
    st.caption(f"Gateway: `{widgets.settings().api_base}`")
widgets.ask_for_api_key()  # the visitor's own key unless the operator configured one; stops the page until given
page.run()
