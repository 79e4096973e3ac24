"""CI workflows: warm manifests (:mod:`.manifest`), lockfiles (:mod:`.lock`), warming
(:mod:`.warm`)."""

__all__: list[str] = []
