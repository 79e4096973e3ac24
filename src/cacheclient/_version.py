"""The package version, in a module of its own so any layer can read it without importing the
package's ``__init__`` (which re-exports the high-level API)."""

__version__ = "0.1.0"
