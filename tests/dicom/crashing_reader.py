"""Ingest readers that fail in worker processes. ``crash_on_named`` dies as a decoder would: by a
segfault on files named ``*crash*``, by ``exit(3)`` (libjpeg's default error handler exits) on files
named ``*exit*``. ``full_disk_on_named`` fails writing the image of files named ``*full*`` (ENOSPC).

A module of its own so that spawned worker processes can import it (a test's monkeypatch stays in
the test's process).
"""

from __future__ import annotations

import errno
import os
import signal

from cxrdoll.dicom import ingest


def crash_on_named(args):
    if "crash" in args[0].path.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "exit" in args[0].path.name:
        os._exit(3)
    return ingest._ingest_job(args)


_READ = ingest._ingest_job  # the real one: a test that runs ``full_disk_on_named`` in this process patches the name


def full_disk_on_named(args):
    """Read the file as usual, but fail writing its image as a full disk would, on files named ``*full*``."""
    if "full" not in args[0].path.name:
        return _READ(args)

    def no_space(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writer = ingest.save_png_atomic
    ingest.save_png_atomic = no_space
    try:
        return _READ(args)
    finally:
        ingest.save_png_atomic = writer
