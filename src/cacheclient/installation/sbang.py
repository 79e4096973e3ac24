"""``<root>/bin/sbang``: run scripts whose real ``#!`` line had to move to line 2.

Linux truncates shebang lines at 127 characters, and padded install prefixes are longer.
Spack therefore rewrites such scripts to start with ``#!/bin/sh <root>/bin/sbang`` and keeps
the original interpreter line as line 2. After relocation those scripts point to the new
root's ``bin/sbang``, which must exist. The script below is cacheclient's own POSIX shell
implementation of that convention.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cacheclient.errors import StoreError

__all__ = ["SBANG_SCRIPT", "install_sbang", "sbang_path", "uses_sbang"]


def __dir__() -> list[str]:
    return __all__


SBANG_SCRIPT = """\
#!/bin/sh
# sbang, as installed by cacheclient.
#
# Runs a script whose interpreter line is too long for the kernel. Such a script starts:
#     #!/bin/sh /path/to/bin/sbang
#     #!/long/path/to/interpreter [argument]
# The kernel runs "/bin/sh sbang SCRIPT ARGS..."; this reads line 2 of SCRIPT and runs
# "interpreter [argument] SCRIPT ARGS...". Line 2 may also start with "--!" (Lua) or
# "//!" (languages whose comments start with //) instead of "#!".
if [ "$#" -lt 1 ]; then
    echo "sbang: usage: sbang SCRIPT [ARGUMENT...]" >&2
    exit 2
fi
script=$1
shift
if [ ! -r "$script" ]; then
    echo "sbang: cannot read $script" >&2
    exit 126
fi
second=$(sed -n '2{p;q;}' "$script")
case $second in
    '#!'*) command_line=${second#??} ;;
    '--!'* | '//!'*) command_line=${second#???} ;;
    *)
        echo "sbang: $script: line 2 is not an interpreter line (#!...)" >&2
        exit 126
        ;;
esac
set -f
# Word splitting is wanted here: interpreter and its optional argument.
exec $command_line "$script" "$@"
"""


def sbang_path(root: Path) -> Path:
    return root / "bin" / "sbang"


def uses_sbang(first_line: bytes, sbang: str) -> bool:
    """Whether a script's first line hands it to *sbang*."""
    line = first_line.rstrip(b"\r\n")
    return line.startswith(b"#!") and line[2:].split() == [b"/bin/sh", sbang.encode()]


def install_sbang(root: Path) -> Path:
    """Write ``<root>/bin/sbang`` (0755) atomically unless it already has this content."""
    target = sbang_path(root)
    data = SBANG_SCRIPT.encode()
    try:
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sbang.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o755)  # noqa: S103 - an executable script, like any in bin/
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StoreError(f"{target}: cannot install sbang: {exc.strerror or exc}") from None
    return target
