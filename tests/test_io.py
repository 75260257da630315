import json
import os

import numpy as np
import pytest

import hashlib

from cxrdoll.io import (atomic_path, file_sha256, files_fingerprint, read_csv_rows, read_json, save_npz_atomic,
                        write_bytes_atomic, write_csv_atomic, write_json_atomic)


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_writing_over_a_folder_names_the_destination_not_the_temp_file(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert str(err.value) == f"{tmp_path / 'out.json'}: is a folder; expected the path of a file to write"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_npz_round_trip_of_any_array_name(tmp_path):
    """``compresslevel`` and ``path`` were taken as arguments, not saved (or raised)."""
    mask = (np.arange(24).reshape(2, 3, 4) % 2).astype(np.uint8)
    save_npz_atomic(tmp_path / "x.npz", mask=mask, compresslevel=np.ones(2), path=np.zeros(1))
    with np.load(tmp_path / "x.npz") as data:
        assert sorted(data.files) == ["compresslevel", "mask", "path"]
        np.testing.assert_array_equal(data["mask"], mask)
        np.testing.assert_array_equal(data["compresslevel"], np.ones(2))


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(bad)
    png = tmp_path / "preview.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ValueError, match=r"preview.png: not JSON text \(not UTF-8; a binary file\?\)"):
        read_json(png)


def test_atomic_files_get_umask_permissions_not_mkstemp_0600(tmp_path):
    import os

    write_json_atomic(tmp_path / "a.json", {})
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_npz_bytes_are_reproducible_and_load(tmp_path):
    import time

    from cxrdoll.io import npz_bytes

    mask = np.eye(5, dtype=np.uint8)
    first = npz_bytes({"mask": mask, "state": np.arange(3, dtype=np.int8)})
    time.sleep(2)  # zip timestamps have 2 s resolution: a clock in the bytes would show
    assert npz_bytes({"mask": mask, "state": np.arange(3, dtype=np.int8)}) == first
    save_npz_atomic(tmp_path / "x.npz", mask=mask)
    with np.load(tmp_path / "x.npz") as data:
        np.testing.assert_array_equal(data["mask"], mask)


def test_csv_tables_round_trip_with_commas_quotes_and_newlines(tmp_path):
    import csv

    rows = [["a.png", 'cannot read, "truncated"'], ["b/c.png", "two\nlines"]]
    write_csv_atomic(tmp_path / "t.csv", ("id", "reason"), rows)
    with open(tmp_path / "t.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["id", "reason"], *rows]
    # the documented bytes: "\n" line ends (not csv's default "\r\n"), quoting only where needed
    assert (tmp_path / "t.csv").read_bytes() == b'id,reason\na.png,"cannot read, ""truncated"""\nb/c.png,"two\nlines"\n'


def test_csv_tables_take_file_names_that_are_not_utf8(tmp_path):
    """A Latin-1 file name ('M\\xfcller.dcm' on disk) reaches Python as a surrogate: the whole table
    (a run's predictions.csv, the deploy app's report) failed to write with UnicodeEncodeError."""
    name = os.fsdecode(b"M\xfcller.dcm")
    write_csv_atomic(tmp_path / "t.csv", ("file", "reason"), [[name, "ok"], ["caf\u00e9.dcm", "ok"]])
    assert read_csv_rows(tmp_path / "t.csv") == [{"file": "M\\xfcller.dcm", "reason": "ok"},
                                                {"file": "caf\u00e9.dcm", "reason": "ok"}]


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # over one read block
    write_bytes_atomic(tmp_path / "f.bin", data)
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_files_fingerprint_changes_with_order_content_and_time_and_names_a_missing_file(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_bytes_atomic(a, b"aaaa")
    write_bytes_atomic(b, b"bbbb")
    first = files_fingerprint([a, b])
    assert files_fingerprint([a, b]) == first and files_fingerprint([str(a), str(b)]) == first
    assert files_fingerprint([b, a]) != first and files_fingerprint([a]) != first
    assert files_fingerprint([a, b], header="320\n") != first
    stat = os.stat(b)
    write_bytes_atomic(b, b"cccc")  # same size, rewritten in place: only the time tells
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert files_fingerprint([a, b]) != first
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files_fingerprint([a, b]) == first  # size and time are all it reads
    with pytest.raises(FileNotFoundError, match=r"gone.png: mask not found"):
        files_fingerprint([a, tmp_path / "gone.png"], what="mask")


def test_without_nan_replaces_nan_and_infinity_at_any_depth():
    from cxrdoll.io import without_nan

    record = {"a": float("nan"), "b": [1.0, float("inf"), {"c": float("-inf"), "d": "NaN"}], "e": (2, float("nan"))}
    assert without_nan(record) == {"a": None, "b": [1.0, None, {"c": None, "d": "NaN"}], "e": [2, None]}
    assert without_nan(record) == without_nan(record)  # NaN would make a record unequal to itself


def test_atomic_write_takes_the_longest_name_the_file_system_takes(tmp_path):
    """The temporary name is longer than the target's; a 255-byte name (the limit) must still work."""
    for name in ("a" * 250 + ".json", "é" * 125 + ".json"):  # 255 bytes; the second with 2-byte characters
        assert len(name.encode()) == 255
        write_json_atomic(tmp_path / name, {"a": 1})
        assert read_json(tmp_path / name) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a" * 250 + ".json", "é" * 125 + ".json"])


def test_a_killed_writer_s_stale_temporary_is_removed_a_live_one_kept(tmp_path):
    """SIGKILL skips atomic_path's clean-up; the temporaries of an image cache are gigabytes."""
    import os
    import time

    stale = tmp_path / ".images_64px.npy.k3x9a_b2.tmp.npy"
    live = tmp_path / ".checkpoint.pt.q8w2e4r6.tmp.pt"
    other = tmp_path / ".hidden.json"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (stale, other):
        os.utime(path, (two_hours_ago, two_hours_ago))
    write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert not stale.exists() and live.exists() and other.exists()



def test_a_folder_another_process_writes_in_is_refused_naming_it(tmp_path, hold_folder):
    from cxrdoll.io import lock_folder, unlock_folder

    out = tmp_path / "out"
    pid = hold_folder(out)
    with pytest.raises(ValueError) as refused:
        lock_folder(out, "training run")
    assert str(refused.value) == (f"{out}: another training run is writing here (process {pid}, lock .cxrdoll.lock); "
                                  "wait for it to end, or use another folder")
    lock_folder(tmp_path / "free", "training run")
    lock_folder(tmp_path / "free", "training run")  # this process holds it already: goes on
    unlock_folder(tmp_path / "free")


def _file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as writes to a full disk fail with ENOSPC (no root needed)."""
    import contextlib
    import resource
    import signal

    @contextlib.contextmanager
    def limited():
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)

    return limited()


def test_a_write_that_fails_names_the_file_written_not_its_temporary(tmp_path):
    """A full disk said ``[Errno 28] No space left on device`` and nothing else, or named the temporary."""
    target = tmp_path / "labels" / "x.npz"
    with _file_size_limit(1024):
        with pytest.raises(OSError) as err:
            write_bytes_atomic(target, b"0" * 4096)
    assert str(err.value) == f"{target}: File too large" and err.value.errno == 27
    assert list(target.parent.iterdir()) == []  # the temporary is removed
    with pytest.raises(FileNotFoundError, match=r"other\.txt"):  # an error about another file keeps its name
        with atomic_path(target):
            open(tmp_path / "other.txt")


def test_a_torch_save_that_cannot_be_written_names_the_file_and_keeps_the_old_one(tmp_path):
    """torch.save to a file reports a full disk as a C++ RuntimeError ("unexpected pos ..."), naming nothing."""
    import torch

    from cxrdoll.io import save_torch_atomic

    path = tmp_path / "checkpoint.pt"
    save_torch_atomic(path, {"w": torch.zeros(10)})
    before = path.read_bytes()
    with _file_size_limit(64 * 1024):
        with pytest.raises(RuntimeError):
            torch.save({"w": torch.zeros(100_000)}, tmp_path / "direct.pt")
        with pytest.raises(OSError) as err:
            save_torch_atomic(path, {"w": torch.zeros(100_000)})
    assert str(err.value) == f"{path}: File too large" and err.value.errno == 27
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "direct.pt"]
    assert torch.load(path, weights_only=True)["w"].shape == (10,)
