"""``python -m cxrdoll``: user errors are one line and exit code 2; bugs keep their traceback."""

from __future__ import annotations

import sys

import pytest

from cxrdoll import cli

FAKE = '''
HELP = "do a fake thing.  for tests"


def wrapped(inner, implicit=False):
    """``inner`` behind two RuntimeErrors, as MONAI raises a bundle's bad input."""
    middle = RuntimeError("applying transform <LoadImaged>")
    if implicit:
        middle.__context__ = inner
    else:
        middle.__cause__ = inner
    outer = RuntimeError("Failed to evaluate ConfigExpression: '$load(@datalist)'")
    outer.__cause__ = middle
    return outer


RAISES = {
    "value": ValueError("data.csv row 3, column 'Edema': value '2' is not 1, 0, -1 or blank"),
    "key": KeyError("unknown observation 'Cardio'"),
    "oserror": PermissionError(13, "Permission denied", "/root/out.json"),
    "multiline": ValueError("first part\\n  second part"),
    "bug": RuntimeError("internal invariant broken"),
    "wrapped": wrapped(ValueError("data.json: not valid JSON (line 5)")),
    "wrapped-context": wrapped(FileNotFoundError("model.pt: file not found"), implicit=True),
    "wrapped-bug": wrapped(TypeError("unsupported operand")),
}



def add_arguments(parser):
    parser.add_argument("--raise", dest="kind", choices=sorted(RAISES))


def run(args):
    if args.kind:
        raise RAISES[args.kind]
    print("ran")
    return 0
'''


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    (tmp_path / "cxrdoll_fake_command.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", {"fake-thing": "cxrdoll_fake_command", "prepare-chexpert": "cxrdoll.data.chexpert_command"})
    yield cli.main
    sys.modules.pop("cxrdoll_fake_command", None)


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("value", "error: data.csv row 3, column 'Edema': value '2' is not 1, 0, -1 or blank"),
        ("key", "error: unknown observation 'Cardio'"),  # not KeyError's repr quoting
        ("oserror", "error: [Errno 13] Permission denied: '/root/out.json'"),
        ("multiline", "error: first part second part"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(fake_cli, capsys, kind, line):
    assert fake_cli(["fake-thing", "--raise", kind]) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_bugs_keep_their_traceback(fake_cli):
    with pytest.raises(RuntimeError, match="internal invariant broken"):
        fake_cli(["fake-thing", "--raise", "bug"])
    with pytest.raises(RuntimeError, match="Failed to evaluate ConfigExpression"):
        fake_cli(["fake-thing", "--raise", "wrapped-bug"])  # no user error behind the wrappers


def test_cxrdoll_traceback_keeps_the_traceback_of_a_user_error(fake_cli, monkeypatch):
    monkeypatch.setenv("CXRDOLL_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="Failed to evaluate ConfigExpression"):
        fake_cli(["fake-thing", "--raise", "wrapped"])


@pytest.mark.parametrize(
    ("kind", "line"),
    [("wrapped", "error: data.json: not valid JSON (line 5)"), ("wrapped-context", "error: model.pt: file not found")],
)
def test_user_errors_behind_runtime_errors_are_unwrapped(fake_cli, capsys, kind, line):
    """MONAI reports a bundle's bad datalist or checkpoint as 'Failed to evaluate ConfigExpression'."""
    assert fake_cli(["fake-thing", "--raise", kind]) == 2
    assert capsys.readouterr().err == line + "\n"


def test_success_returns_the_command_exit_code(fake_cli, capsys):
    assert fake_cli(["fake-thing"]) == 0 and capsys.readouterr().out == "ran\n"


def test_unknown_command_suggests_the_closest(fake_cli, capsys):
    assert fake_cli(["fake-thin"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown command 'fake-thin'; did you mean 'fake-thing'? run 'python -m cxrdoll --help' for the list\n"
    )
    assert fake_cli(["zzz"]) == 2
    assert "unknown command 'zzz'; run 'python -m cxrdoll --help'" in capsys.readouterr().err


def exit_code(run, argv) -> int:
    """argparse ends --help, --version and usage errors with SystemExit, as ``python -m`` needs."""
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    return exit_info.value.code


def test_usage_errors_exit_2_with_argparse_message(fake_cli, capsys):
    assert exit_code(fake_cli, ["fake-thing", "--raise", "nope"]) == 2
    assert "argument --raise: invalid choice: 'nope'" in capsys.readouterr().err
    assert exit_code(fake_cli, ["prepare-chexpert", "--root", "x"]) == 2
    assert "the following arguments are required: --csv, --out" in capsys.readouterr().err


def test_ingest_dicom_refuses_negative_counts_while_parsing(capsys):
    """As every command's counts are (cxrdoll.argtypes), not after the command has started."""
    for option in ("--workers", "--size"):
        assert exit_code(cli.main, ["ingest-dicom", "--in", "x", "--out", "y", option, "-1"]) == 2
        assert f"argument {option}: '-1' is not a whole number >= 0" in capsys.readouterr().err


def test_help_lists_commands_without_importing_them(fake_cli, capsys):
    assert exit_code(fake_cli, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "  fake-thing        Do a fake thing. for tests\n" in out  # aligned after the longest name
    assert "  prepare-chexpert  Turn CheXpert train.csv" in out
    assert "cxrdoll_fake_command" not in sys.modules
    assert fake_cli([]) == 2 and "commands:" in capsys.readouterr().err  # no command: the help, on stderr


def test_command_help_and_version(fake_cli, capsys):
    assert exit_code(fake_cli, ["prepare-chexpert", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m cxrdoll prepare-chexpert [-h] --root DIR --csv CSV --out JSON")
    assert "--uncertain-per OBS=POLICY,..." in out and "examples:" in out
    assert exit_code(fake_cli, ["--version"]) == 0 and capsys.readouterr().out.startswith("cxrdoll ")


def test_real_command_user_error_is_one_line(fake_cli, capsys, tmp_path):
    argv = ["prepare-chexpert", "--root", str(tmp_path), "--csv", "missing.csv", "--out", str(tmp_path / "o.json")]
    assert fake_cli(argv) == 2
    assert capsys.readouterr().err == f"error: missing.csv: CSV file not found (also looked for {tmp_path}/missing.csv)\n"


def test_an_output_folder_that_is_a_file_is_named_as_such(tmp_path, capsys):
    """--out naming a file (or a path under one) said only '[Errno 17] File exists: ...' or '[Errno 20] Not a
    directory: ...', from mkdir."""
    from pathlib import Path

    from cxrdoll.errors import one_line

    a_file = tmp_path / "results"
    a_file.write_text("")
    for folder in (a_file, a_file / "sub"):
        with pytest.raises((FileExistsError, NotADirectoryError)) as caught:
            Path(folder).mkdir(parents=True, exist_ok=True)
        assert one_line(caught.value) == f"{a_file}: is a file, not a folder"
    with pytest.raises(FileExistsError) as caught:
        tmp_path.mkdir()  # a folder that exists: the usual text
    assert one_line(caught.value) == f"[Errno 17] File exists: '{tmp_path}'"
    with pytest.raises(NotADirectoryError) as caught:
        open(a_file / "x.json", "w")
    assert one_line(caught.value) == f"{a_file}: is a file, not a folder"
    assert cli.main(["demo", "--out", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: {a_file}: is a file, not a folder\n"


class _Raise:
    """A transform raising ``error`` (picklable, for a DataLoader worker process)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, item):
        raise self.error


def _worker_error(error: Exception) -> Exception:
    """What the main process catches when a worker's MONAI transform raises ``error``."""
    from monai.data import DataLoader, Dataset

    with pytest.raises(Exception) as caught:
        next(iter(DataLoader(Dataset([{"image": "x.png"}], _Raise(error)), num_workers=1)))
    return caught.value


def test_a_user_error_in_a_dataloader_worker_is_read_back_from_its_traceback_text():
    """torch passes a worker's exception on as text ("Caught ... in DataLoader worker process 0"),
    behind MONAI's "applying transform" RuntimeError; the cause naming the file is what to print."""
    from cxrdoll.errors import one_line, user_error

    caught = _worker_error(ValueError("scans/a.png: cannot identify image file 'scans/a.png'"))
    assert "in DataLoader worker process 0" in str(caught) and caught.__cause__ is None
    found = user_error(caught)
    assert type(found) is ValueError and one_line(found) == "scans/a.png: cannot identify image file 'scans/a.png'"
    assert type(user_error(_worker_error(FileNotFoundError("scans/b.png: file not found")))) is FileNotFoundError
    assert user_error(_worker_error(TypeError("unsupported operand"))) is None  # a bug keeps its traceback


@pytest.fixture
def bundle_hook(monkeypatch):
    """``brief_user_errors`` installed over a recording stand-in for Python's own hook; restored after."""
    from cxrdoll.errors import brief_user_errors

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(value))
    monkeypatch.delenv("CXRDOLL_TRACEBACK", raising=False)
    brief_user_errors()
    brief_user_errors()  # installed once however many configs call it
    yield seen


def test_an_uncaught_user_error_of_a_bundle_run_is_one_line(bundle_hook, capsys):
    """What ``python -m monai.bundle run`` prints when a bundle's datalist is bad."""
    outer = RuntimeError("Failed to evaluate ConfigExpression: '$load(@datalist)'")
    outer.__cause__ = ValueError("data.json: not valid JSON\n(line 5)")
    sys.excepthook(RuntimeError, outer, None)
    assert capsys.readouterr().err == ("error: data.json: not valid JSON (line 5)\n"
                                       "(CXRDOLL_TRACEBACK=1 shows the full traceback)\n")
    assert bundle_hook == []


def test_an_uncaught_bug_or_an_asked_for_traceback_goes_to_the_previous_hook(bundle_hook, capsys, monkeypatch):
    bug = TypeError("unsupported operand")
    sys.excepthook(TypeError, bug, None)
    monkeypatch.setenv("CXRDOLL_TRACEBACK", "1")
    user = ValueError("data.json: not valid JSON")
    sys.excepthook(ValueError, user, None)
    assert bundle_hook == [bug, user] and capsys.readouterr().err == ""


def test_batchnorm_on_one_1x1_image_says_which_settings_to_change():
    """At 32 px the deepest feature map is 1x1; a last training batch of one image fails in BatchNorm
    with torch's words only."""
    import torch

    from cxrdoll.errors import one_line, user_error
    from cxrdoll.networks import build_segmenter

    network = build_segmenter("densenet_tiny", decoder_channels=(16, 16, 8, 8, 8)).train()
    with pytest.raises(ValueError) as caught:
        network(torch.zeros(1, 1, 32, 32))
    line = one_line(user_error(caught.value))
    assert line.startswith("Expected more than 1 value per channel when training")
    assert line.endswith("use image_size 64 or more, or a batch_size that leaves no single image over")
