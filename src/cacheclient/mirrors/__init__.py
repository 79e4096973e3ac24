"""Binary mirrors: file layout rules, opening a mirror's catalog, and writing test mirrors."""

from __future__ import annotations

__all__: list[str] = []
