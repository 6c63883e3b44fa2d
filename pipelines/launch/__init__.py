"""Whole workflows a user starts: the demo and the dashboard server."""
