"""The built-in handlers, each a plugin module found through the ``reactorkit``
entry points of this distribution, written only against ``reactorkit``'s
public API exactly as a third-party plugin would be."""
