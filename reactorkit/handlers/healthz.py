"""Placeholder: the /healthz route plugin has not landed yet."""
