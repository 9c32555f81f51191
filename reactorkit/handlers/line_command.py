"""Placeholder: this built-in handler has not landed yet; it provides nothing,
so the default config skips its listener with a warning."""
