"""Dispatch: send requests -> decisions, provider attempts and their lifecycle events."""
