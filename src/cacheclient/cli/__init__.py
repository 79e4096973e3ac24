"""Command-line interface: ``cacheclient`` and ``install-from-cache``."""
