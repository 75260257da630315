"""The deploy app's settings: bad values fail up front, naming the variable or folder and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxrdoll.deploy.settings import AppSettings, check_input_folder, parse_device, parse_threshold, settings_from_env


def test_settings_from_env_defaults_and_values():
    assert settings_from_env({}) == AppSettings(device="cpu", threshold=0.5)
    assert settings_from_env({"CXR_DEVICE": "cpu", "CXR_THRESHOLD": "0.3"}) == AppSettings("cpu", 0.3)
    # as given, not rounded; and a value read from a file keeps its newline
    assert settings_from_env({"CXR_DEVICE": " cpu\n", "CXR_THRESHOLD": "0.375"}) == AppSettings("cpu", 0.375)


@pytest.mark.parametrize("text", ["abc", "", "5", "0", "1", "-0.2", "nan", "inf"])
def test_threshold_outside_0_1_names_the_variable(text):
    with pytest.raises(ValueError, match=r"^CXR_THRESHOLD must be a number in \(0, 1\), e.g. 0.5; got "):
        parse_threshold(text)
    with pytest.raises(ValueError, match="CXR_THRESHOLD"):
        settings_from_env({"CXR_THRESHOLD": text})


# ids not plain "gpu": conftest skips tests with a "gpu" keyword on machines without CUDA.
@pytest.mark.parametrize("text", ["gpu", "CPU", "cuda:x", "cuda:-1", "cuda:", "mps"], ids=lambda text: f"device={text}")
def test_unknown_device_names_the_variable_and_the_allowed_values(text):
    with pytest.raises(ValueError, match=f"^CXR_DEVICE must be cpu, cuda or cuda:N; got '{text}'"):
        parse_device(text)


def test_device_messages_name_the_setting_they_are_given():
    """sample-efficiency checks its --device with the same parser: the message must name that option."""
    with pytest.raises(ValueError, match=r"^--device must be cpu, cuda or cuda:N; got 'gpu'$"):
        parse_device("gpu", "--device")


def test_cuda_device_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^CXR_DEVICE=cuda: no CUDA device is available on this machine; use cpu$"):
        parse_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^CXR_DEVICE=cuda:1: this machine has 1 CUDA device\(s\), cuda:0 to cuda:0$"):
        parse_device("cuda:1")
    assert parse_device("cuda:0") == "cuda:0" and parse_device("cpu") == "cpu"


def test_input_folder_must_hold_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: input folder not found"):
        check_input_folder(tmp_path / "nowhere")
    (tmp_path / "file.dcm").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file.dcm: input is not a folder"):
        check_input_folder(tmp_path / "file.dcm")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty: input folder holds no files \(searched recursively\)"):
        check_input_folder(tmp_path / "empty")
    (tmp_path / "empty" / "sub" / "x.dcm").write_bytes(b"")
    assert check_input_folder(tmp_path / "empty") == tmp_path / "empty"


def test_no_input_folder_given_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SDK's default input path, relative: none here
    with pytest.raises(FileNotFoundError, match=r"^no input folder: give one with -i DICOM_DIR \(or HOLOSCAN_INPUT_PATH\)"):
        check_input_folder("input")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.dcm").write_bytes(b"")
    assert check_input_folder("input") == Path("input")
