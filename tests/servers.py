"""Test servers on 127.0.0.1: Debian nginx (nginxserver.py) and a fault injector (faultserver.py).

Import from here: ``from servers import Fault, FaultServer, NginxServer``. The fixtures in
``conftest.py`` (``nginx_mirror``, ``fault_server``) start them and stop them at teardown.
"""

from __future__ import annotations

from faultserver import Fault, FaultKind, FaultServer, RequestRecord
from nginxserver import NGINX, AccessEntry, NginxError, NginxServer, free_port, refused_url

__all__ = [
    "NGINX",
    "AccessEntry",
    "Fault",
    "FaultKind",
    "FaultServer",
    "NginxError",
    "NginxServer",
    "RequestRecord",
    "free_port",
    "refused_url",
]
