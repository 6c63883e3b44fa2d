"""Streamlit rendering of the dashboard's pages; logic lives in ``dashboard.logic``."""
