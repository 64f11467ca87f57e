"""The UI's pages: Streamlit scripts run by ``app.py``'s navigation (a package so installs carry them)."""
