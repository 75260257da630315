"""An ingest reader that dies as a decoder would: by a segfault on files named ``*crash*``, by
``exit(3)`` (libjpeg's default error handler exits) on files named ``*exit*``.

A module of its own so that spawned worker processes can import it (a test's monkeypatch stays in
the test's process).
"""

from __future__ import annotations

import os
import signal

from cxrdoll.dicom import ingest


def crash_on_named(args):
    if "crash" in args[0].path.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "exit" in args[0].path.name:
        os._exit(3)
    return ingest._ingest_job(args)
