"""Operator commands: ``python -m ops status|recover|unlock|reset|replay|inspect``."""
