"""Files a run writes: JSON written atomically, and output folders checked before any work starts."""

from __future__ import annotations

import json
import os
import tempfile
import uuid

from hidlr_hf.errors import HiDLRError


def write_json_atomic(path, obj, **dump_kwargs) -> str:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and a rename, so a reader (or a
    run killed mid-write) never sees a half-written file. ``dump_kwargs`` go to ``json.dump``. Returns ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"  # unique per writer; open() keeps the usual file permissions
    try:
        with open(tmp, "x") as fh:
            json.dump(obj, fh, **dump_kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable_dir(path, flag: str) -> None:
    """Create ``path`` and write a probe file there, so an unwritable folder fails now rather than after training;
    ``flag`` names the option that chose the folder (the error says to pass another).

    Every process of a multi-process launch checks the same folder at the same moment, before any process group
    exists to elect one of them: each writes a probe file of its own name, so no process removes another's.
    """
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hidlr_write_probe.", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise HiDLRError(f"cannot write to {flag} {path} ({err.strerror or err}); pass {flag} with a folder you can write") from None
