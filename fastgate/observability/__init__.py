"""Logs, the dashboard and trace export: what operators read."""
