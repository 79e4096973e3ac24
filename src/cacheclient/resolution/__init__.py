"""Pure selection: versions, spec syntax, target and OS compatibility, ranking and closures.

Host facts are inputs (:class:`~.host.HostProfile`); :mod:`.host` is the one module that probes
the machine, and only when a caller asks it to.
"""

__all__: list[str] = []
