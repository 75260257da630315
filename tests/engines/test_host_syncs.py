"""Training iterations of the bundles must not make the host wait for the device (issue 3).

On a GPU, reading a value back (``loss.item()``), a data-dependent shape (``nonzero``, boolean
indexing) or a blocking host-to-device copy stops the host until the device has drained its
queue; the next iteration's kernels are then launched onto an idle GPU. No GPU is needed to find
such calls: a ``TorchFunctionMode`` sees every tensor call the engines, handlers, transforms and
loss make between fetching a batch and the end of the iteration.
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from torch.overrides import TorchFunctionMode

from monai.engines.utils import IterationEvents

from cxrdoll.engines.bundle_run import make_workflow
from cxrdoll.engines.progress import LossProgressBar, every_n_iterations
from tests.bundles.tiny_runs import TRAINING_BUNDLES, tiny_run_settings

READS_BACK = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "nonzero",
              "masked_select", "unique"}
COPIES = {"to", "cuda", "copy_"}


def _waits_for_device(func, args: tuple, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "")
    if name in READS_BACK:
        return True
    if name == "__getitem__" and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    if name in COPIES:
        moves = "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:]) or name == "cuda"
        return moves and not kwargs.get("non_blocking", False) and not _written_in_torch()
    return False


def _written_in_torch() -> bool:
    """Whether the call was made by torch's own code: ``get_total_norm`` moving per-tensor norms to
    the device they are already on, not a host-to-device copy of the bundles' making."""
    stack = traceback.extract_stack()
    for caller, frame in zip(stack, stack[1:]):
        if frame.name == "__torch_function__" and frame.filename == __file__:
            return "/torch/" in caller.filename
    return False


def _caller() -> str:
    """The first frame outside this file and torch: where the call was written."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and frame.filename != __file__:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def _from_optimizer() -> bool:
    # torch.optim keeps its step counters on the host unless ``capturable``: their .item() waits for nothing.
    return any("/torch/optim/" in f.filename for f in traceback.extract_stack()[-6:])


class HostSyncRecorder(TorchFunctionMode):
    """Records, per iteration, the tensor calls that would wait for a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.current: list[str] = []
        self.by_iteration: dict[int, list[str]] = defaultdict(list)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.recording and _waits_for_device(func, args, kwargs) and not _from_optimizer():
            self.current.append(f"{getattr(func, '__name__', func)} at {_caller()}")
        return func(*args, **kwargs)

    def attach(self, engine: Engine) -> None:
        """Attach after the bundle's handlers so that the window closes after theirs have run."""
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)

    def _start(self, engine: Engine) -> None:
        self.current, self.recording = [], True

    def _stop(self, engine: Engine) -> None:
        self.recording = False
        self.by_iteration[engine.state.iteration] = self.current


def _trainer(settings: dict, tmp_path: Path, **overrides) -> Engine:
    workflow = make_workflow(output_dir=str(tmp_path / "out"), max_epochs=1, **settings, **overrides)
    return workflow.parser.get_parsed_content("train#trainer")


def _record(settings: dict, tmp_path: Path, log_every: int, **overrides) -> tuple[HostSyncRecorder, Engine]:
    trainer = _trainer(settings, tmp_path, log_every=log_every, **overrides)
    recorder = HostSyncRecorder()
    recorder.attach(trainer)
    with recorder:
        trainer.run()
    return recorder, trainer


BUNDLE_SETTINGS = pytest.mark.parametrize("bundle", TRAINING_BUNDLES)


@BUNDLE_SETTINGS
def test_only_logging_iterations_read_from_the_device(bundle, tmp_path):
    recorder, trainer = _record(tiny_run_settings(bundle, tmp_path), tmp_path, log_every=3)
    assert trainer.state.iteration == 8 and sorted(recorder.by_iteration) == list(range(1, 9))
    for iteration, calls in recorder.by_iteration.items():
        if iteration % 3:
            assert calls == [], f"iteration {iteration} waits for the device: {calls}"
        else:  # the weights' finiteness (StopOnDivergence), then the loss, read once by each logging handler
            assert [c.split()[0] for c in calls] == ["__bool__"] + ["item"] * 3, calls


@BUNDLE_SETTINGS
def test_gradients_are_released_between_steps_not_zeroed(bundle, tmp_path):
    # Zeroed gradients cost a fill and an accumulating add per parameter tensor every step (about
    # 360 kernel launches each for a DenseNet121), work the bare step does not do.
    trainer = _trainer(tiny_run_settings(bundle, tmp_path), tmp_path)
    released = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                              lambda engine: released.append(all(p.grad is None for p in engine.network.parameters())))
    trainer.run()
    assert len(released) == 8 and all(released)


def test_the_recorder_catches_per_iteration_logging_and_blocking_copies(tmp_path):
    recorder, _ = _record(tiny_run_settings("cxr_classifier", tmp_path), tmp_path, log_every=1,
                          **{"train#trainer#non_blocking": False})
    for calls in recorder.by_iteration.values():  # image and label copies, the weights' check, the three loss reads
        assert [c.split()[0] for c in calls] == ["to", "to", "__bool__", "item", "item", "item"], calls


def test_a_blocking_copy_is_caught():
    recorder = HostSyncRecorder()
    recorder.recording = True
    x = torch.zeros(2)
    with recorder:
        x.to("cpu", non_blocking=True)
        x.to(torch.float64)
        x.to("cpu")
        x[x > 0]
    assert [c.split()[0] for c in recorder.current] == ["to", "__getitem__"]


def test_log_interval_must_be_positive():
    with pytest.raises(ValueError, match="log_every must be a positive number of iterations, got 0"):
        every_n_iterations(0)
    with pytest.raises(ValueError, match="got -2"):
        LossProgressBar(every=-2)
    keep = every_n_iterations(4)
    assert [i for i in range(1, 13) if keep(None, i)] == [4, 8, 12]
