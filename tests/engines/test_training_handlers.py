"""Wall-clock budget and resumable checkpoint handlers on plain Ignite engines."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events

from cxrdoll.engines.amp import GradScalerOnlyForFloat16
from cxrdoll.engines.budget import WallClockBudget, WallClockCosineLR
from cxrdoll.engines.checkpoint import ResumableCheckpoint, WeightsLoader


def _trainer(net: torch.nn.Module) -> Engine:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    return Engine(step)


def _run_with_scaler(checkpoint, scaler: torch.amp.GradScaler, max_epochs: int, batches: int = 1) -> Engine:
    """Train a fresh Linear whose engine carries ``scaler`` (as MONAI's trainer does under AMP), checkpointed
    to ``checkpoint`` (attached after the scaler: it reads it)."""
    net = torch.nn.Linear(2, 1)
    trainer = _trainer(net)
    trainer.add_event_handler(Events.STARTED, lambda engine: setattr(engine, "scaler", scaler))
    ResumableCheckpoint(checkpoint, {"network": net}).attach(trainer)
    trainer.run([torch.ones(1, 2)] * batches, max_epochs=max_epochs)
    return trainer


def test_budget_stops_mid_epoch_after_validating():
    trainer = _trainer(torch.nn.Linear(2, 1))
    runs = []

    class Evaluator:  # MONAI evaluators run with the trainer's epoch number
        def run(self, global_epoch):
            runs.append(global_epoch)

    WallClockBudget(1e-9, Evaluator()).attach(trainer)
    trainer.run([torch.ones(1, 2)] * 5, max_epochs=3)
    assert trainer.state.iteration == 1 and runs == [1]


def test_no_budget_runs_to_the_end_and_bad_budget_is_rejected():
    trainer = _trainer(torch.nn.Linear(2, 1))
    WallClockBudget(None).attach(trainer)
    trainer.run([torch.ones(1, 2)] * 5, max_epochs=2)
    assert trainer.state.iteration == 10
    with pytest.raises(ValueError, match="max_train_seconds must be positive or null, got 0"):
        WallClockBudget(0)


def test_checkpoint_resumes_weights_and_iteration(tmp_path):
    data = [torch.ones(1, 2)] * 3
    net = torch.nn.Linear(2, 1)
    trainer = _trainer(net)
    ResumableCheckpoint(tmp_path / "ckpt.pt", {"network": net}).attach(trainer)
    trainer.run(data, max_epochs=1)
    saved = {k: v.clone() for k, v in net.state_dict().items()}

    fresh = torch.nn.Linear(2, 1)
    resumed = _trainer(fresh)
    seen = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append((e.state.iteration, fresh.weight.clone())))
    ResumableCheckpoint(tmp_path / "ckpt.pt", {"network": fresh}).attach(resumed)
    resumed.run(data, max_epochs=2)
    assert seen[0][0] == 4 and resumed.state.iteration == 6  # continued with epoch 2 only
    torch.testing.assert_close(seen[0][1], saved["weight"])


def test_a_resumed_run_with_momentum_ends_where_an_uninterrupted_one_does(tmp_path):
    """The optimizer's state (SGD momentum buffers) comes back with the weights: epoch 2 after a
    resume takes the same steps as epoch 2 of one 2-epoch run, which a fresh momentum would not."""
    data = [torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]])]

    def run(path, max_epochs, seed_weights=True):
        net = torch.nn.Linear(2, 1)
        if seed_weights:
            with torch.no_grad():
                net.weight.copy_(torch.tensor([[0.3, -0.2]]))
                net.bias.fill_(0.1)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

        def step(engine, batch):
            opt.zero_grad()
            net(batch).pow(2).mean().backward()
            opt.step()

        trainer = Engine(step)
        ResumableCheckpoint(path, {"network": net, "optimizer": opt}).attach(trainer)
        trainer.run(data, max_epochs=max_epochs)
        return net

    straight = run(tmp_path / "a" / "c.pt", 2)
    run(tmp_path / "b" / "c.pt", 1)
    resumed = run(tmp_path / "b" / "c.pt", 2, seed_weights=False)
    torch.testing.assert_close(resumed.weight, straight.weight)
    torch.testing.assert_close(resumed.bias, straight.bias)


def test_the_checkpoint_is_written_every_interval_epochs(tmp_path):
    """One iteration an epoch: the trainer's saved iteration is the epoch the file was written at."""
    net = torch.nn.Linear(2, 1)
    trainer = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": net}, interval=2).attach(trainer)
    saved_at = []  # read after the checkpoint's own handler
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved_at.append(
        torch.load(tmp_path / "c.pt", weights_only=True)["trainer"]["iteration"] if (tmp_path / "c.pt").exists() else None))
    trainer.run([torch.ones(1, 2)], max_epochs=5)
    assert saved_at == [None, 2, 2, 4, 4]


def test_a_second_training_run_into_an_output_folder_in_use_is_refused_before_it_writes(tmp_path, hold_folder):
    """A job submitted twice: each run replaced the other's model.pt and metrics.json, leaving a model
    beside the record of another run."""
    net = torch.nn.Linear(2, 1)
    trainer = _trainer(net)
    ResumableCheckpoint(tmp_path / "run" / "ckpt.pt", {"network": net}).attach(trainer)
    pid = hold_folder(tmp_path / "run")
    with pytest.raises(ValueError, match=rf"run: another training run is writing here \(process {pid}, "):
        trainer.run([torch.ones(1, 2)], max_epochs=1)
    assert not (tmp_path / "run" / "ckpt.pt").exists()
    trainer = _trainer(net)
    ResumableCheckpoint(tmp_path / "free" / "ckpt.pt", {"network": net}).attach(trainer)
    trainer.run([torch.ones(1, 2)], max_epochs=1)  # the run's end releases its folder: another process may start
    hold_folder(tmp_path / "free")  # asserts the other process got the lock


def test_resuming_a_finished_run_says_nothing_is_left_to_train(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    done = _trainer(net)
    ResumableCheckpoint(tmp_path / "ckpt.pt", {"network": net}).attach(done)
    done.run([torch.ones(1, 2)] * 2, max_epochs=1)
    again = _trainer(net)
    ResumableCheckpoint(tmp_path / "ckpt.pt", {"network": net}).attach(again)
    with caplog.at_level(logging.INFO):
        again.run([torch.ones(1, 2)] * 2, max_epochs=1)
    assert again.state.iteration == 2
    assert (f"resumed from {tmp_path / 'ckpt.pt'} at epoch 1; max_epochs reached, nothing left to train (raise "
            "--max_epochs to train longer, or start over in a new output_dir or with --resume false)") in caplog.text
    caplog.clear()
    longer = _trainer(net)
    ResumableCheckpoint(tmp_path / "ckpt.pt", {"network": net}).attach(longer)
    with caplog.at_level(logging.INFO):
        longer.run([torch.ones(1, 2)] * 2, max_epochs=2)
    assert longer.state.iteration == 4 and "nothing left to train" not in caplog.text


def test_a_run_that_does_not_resume_refuses_to_overwrite_another_runs_outputs(tmp_path):
    """Its first validation would replace the finished run's model.pt and record."""
    net = torch.nn.Linear(2, 1)
    outputs = [tmp_path / "validation_history.json", tmp_path / "model.pt"]

    def run(resume: bool) -> Engine:
        trainer = _trainer(net)
        ResumableCheckpoint(tmp_path / "checkpoint.pt", {"network": net}, resume=resume, outputs=outputs).attach(trainer)
        trainer.run([torch.ones(1, 2)], max_epochs=1)
        return trainer

    run(resume=False)  # an empty folder
    outputs[1].write_bytes(b"a finished model")
    with pytest.raises(ValueError) as refused:
        run(resume=False)
    assert str(refused.value) == (f"{tmp_path}: holds another run's model.pt, which this run would overwrite: resume it "
                                  "with --resume true, or use a new or empty output_dir")
    assert run(resume=True).state.epoch == 1  # resumed: nothing left to train, nothing overwritten
    (tmp_path / "checkpoint.pt").unlink()
    outputs[0].write_text("{}")
    with pytest.raises(ValueError, match=r"holds another run's validation_history\.json and model\.pt, which this run "
                                         r"would overwrite: it left no checkpoint\.pt to resume from, or use a new"):
        run(resume=True)
    assert outputs[1].read_bytes() == b"a finished model"


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    trainer = _trainer(torch.nn.Linear(2, 1))
    ResumableCheckpoint(bad, {"network": torch.nn.Linear(2, 1)}).attach(trainer)
    with pytest.raises(ValueError, match="ckpt.pt: cannot load as a checkpoint"):
        trainer.run([torch.ones(1, 2)], max_epochs=1)

    small = torch.nn.Linear(2, 1)
    wrote = _trainer(small)
    ResumableCheckpoint(tmp_path / "small.pt", {"network": small}).attach(wrote)
    wrote.run([torch.ones(1, 2)], max_epochs=1)
    wider = torch.nn.Linear(2, 3)
    resumed = _trainer(wider)
    ResumableCheckpoint(tmp_path / "small.pt", {"network": wider}).attach(resumed)
    with pytest.raises(ValueError, match=r"small\.pt \[network\] does not match the model: 2 shape mismatches.*--resume false"):
        resumed.run([torch.ones(1, 2)], max_epochs=2)

    net = torch.nn.Linear(2, 1)
    done = _trainer(net)
    ResumableCheckpoint(tmp_path / "long.pt", {"network": net}).attach(done)
    done.run([torch.ones(1, 2)], max_epochs=3)
    short = _trainer(net)
    ResumableCheckpoint(tmp_path / "long.pt", {"network": net}).attach(short)
    with pytest.raises(ValueError, match="long.pt: checkpoint is at epoch 3, beyond max_epochs=2"):
        short.run([torch.ones(1, 2)], max_epochs=2)
    with pytest.raises(ValueError, match="checkpoint interval must be >= 1"):
        ResumableCheckpoint(tmp_path / "x.pt", {}, interval=0)


DDP_BUDGET = """
import datetime, json, pathlib, sys
import torch, torch.distributed as dist
from ignite.engine import Engine, Events
from cxrdoll.engines.budget import WallClockBudget, WallClockCosineLR

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
rank = dist.get_rank()
on_default = []  # broadcasts over the default group: NCCL on GPUs, where reading one back waits for the GPU
broadcast = dist.broadcast
def counted(tensor, src=None, group=None, **kwargs):
    on_default.append(group is None or group is dist.group.WORLD)
    return broadcast(tensor, src=src, group=group, **kwargs)
dist.broadcast = counted
now = [0.0]
opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)

def step(engine, batch):
    dist.all_reduce(torch.ones(1))  # as DDP's gradient all-reduce: every rank must take every step
    now[0] += 1.0 + 0.5 * rank  # rank 1's clock runs fast: alone, it would stop at iteration 7, rank 0 at 10

trainer = Engine(step)
WallClockCosineLR(opt, 10.0, clock=lambda: now[0]).attach(trainer)
WallClockBudget(10.0, clock=lambda: now[0]).attach(trainer)
rates = []
trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: rates.append(round(opt.param_groups[0]["lr"], 6)))
trainer.run(range(100), max_epochs=1)
result = {"rank": rank, "iterations": trainer.state.iteration, "rates": rates, "on_default": sum(on_default),
          "broadcasts": len(on_default)}
pathlib.Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(result))  # stdout lines of ranks interleave
dist.destroy_process_group()
"""


def test_wall_clock_budget_stops_every_ddp_rank_at_the_same_iteration(tmp_path):
    """Each rank on its own clock would stop at its own iteration and leave the others in a collective.
    Rank 0's clock reaches the others through the CPU host group, never the default (NCCL) group."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_budget.py"
    script.write_text(DDP_BUDGET)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             str(script), str(tmp_path)], capture_output=True, text=True, timeout=180,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["iterations"] for r in runs] == [10, 10]
    assert runs[0]["rates"] == runs[1]["rates"] and runs[0]["rates"][:2] == [1.0, 0.975528]
    assert [(r["on_default"], r["broadcasts"]) for r in runs] == [(0, 20), (0, 20)]  # all on the CPU host group


def test_resuming_with_more_epochs_stretches_the_cosine_schedule(tmp_path):
    """Rates as if the longer run had been asked for from the start, not the old cosine's zero and climb."""
    def run(max_epochs):
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
        trainer = Engine(lambda engine, batch: None)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: schedule.step())  # before the save, as in the bundles
        ResumableCheckpoint(tmp_path / "c.pt", {"network": net, "optimizer": opt, "lr_scheduler": schedule}).attach(trainer)
        rates = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: rates.append(round(opt.param_groups[0]["lr"], 9)))
        trainer.run([0], max_epochs=max_epochs)
        return rates

    assert run(2) == [1e-4, 5e-5]
    assert run(4) == [5e-5, 1.4645e-5]  # epochs 3 and 4 of a 4-epoch cosine
    assert run(4) == []  # nothing left, and the horizon already matches


@pytest.mark.parametrize("dtype, keeps_scaling", [(torch.bfloat16, False), (torch.float16, True), (None, True)])
def test_only_float16_keeps_the_gradient_scaler_monai_builds(tmp_path, dtype, keeps_scaling):
    """MONAI's ``Trainer.run`` builds its scaler after the handlers attach: the swap must outlive that,
    and the resumable checkpoint must save the scaler the iterations use."""
    from monai.engines import SupervisedTrainer

    net = torch.nn.Linear(2, 1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=[{"image": torch.ones(1, 2), "label": torch.ones(1, 1)}],
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.MSELoss(), amp=True,
        amp_kwargs={} if dtype is None else {"dtype": dtype},
        train_handlers=[GradScalerOnlyForFloat16(), ResumableCheckpoint(tmp_path / "c.pt", {"network": net})],
    )
    used = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: used.append(engine.scaler))
    trainer.run()
    (scaler,) = used
    assert isinstance(scaler, torch.cuda.amp.GradScaler) == keeps_scaling  # the type MONAI builds
    if not keeps_scaling:  # pass-through: the loss is not scaled, so no inf check runs
        loss = torch.tensor(2.0)
        assert not scaler.is_enabled() and scaler.scale(loss) is loss
    assert "scaler" in torch.load(tmp_path / "c.pt", weights_only=True)


def test_the_bfloat16_swap_gives_a_disabled_scaler_and_leaves_float16_alone():
    """Disabled by the swap itself, not by a machine without CUDA (which disables it with a warning)."""
    import warnings
    from types import SimpleNamespace

    built = object()
    engine = SimpleNamespace(amp_kwargs={"dtype": torch.bfloat16}, scaler=built)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradScalerOnlyForFloat16.swap(engine)
    assert engine.scaler is not built and not engine.scaler.is_enabled()
    engine = SimpleNamespace(amp_kwargs={"dtype": torch.float16}, scaler=built)
    GradScalerOnlyForFloat16.swap(engine)
    assert engine.scaler is built
    engine = SimpleNamespace(amp_kwargs={"dtype": torch.bfloat16}, scaler=None)  # amp off: no scaler to swap
    GradScalerOnlyForFloat16.swap(engine)
    assert engine.scaler is None


def test_a_run_saved_without_gradient_scaling_resumes_in_float16_with_a_fresh_scaler(tmp_path, caplog):
    """A bf16 run (or one without CUDA) saves its disabled scaler's empty state; on a GPU the fp16
    scaler of the resumed run is enabled and refused to load it ("The source state dict is empty")."""
    _run_with_scaler(tmp_path / "c.pt", torch.amp.GradScaler("cpu", enabled=False), 1, batches=2)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["scaler"] == {}
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)  # enabled, as MONAI's fp16 scaler on CUDA
    with caplog.at_level(logging.INFO):
        assert _run_with_scaler(tmp_path / "c.pt", fresh, 2, batches=2).state.iteration == 4
    assert "saved without gradient scaling; fp16 starts a fresh gradient scaler" in caplog.text
    assert fresh.get_scale() == 1024.0


def test_cosine_rate_follows_the_clock_to_zero_at_the_budget():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    now = [100.0]
    seen = []
    trainer = Engine(lambda engine, batch: seen.append(round(opt.param_groups[0]["lr"], 6)) or now.__setitem__(0, now[0] + 2.5))
    WallClockCosineLR(opt, seconds=10.0, clock=lambda: now[0]).attach(trainer)
    trainer.run([0] * 6, max_epochs=1)  # 2.5 s per iteration: t = 0, 2.5, 5, 7.5, 10, 12.5
    assert seen == [0.1, 0.085355, 0.05, 0.014645, 0.0, 0.0]
    with pytest.raises(ValueError, match="positive or null"):
        WallClockCosineLR(opt, seconds=0)


def test_weights_loader_loads_at_start_and_names_a_foreign_checkpoint(tmp_path):
    trained = torch.nn.Linear(2, 1)
    torch.save({"model": trained.state_dict()}, tmp_path / "model.pt")
    fresh = torch.nn.Linear(2, 1)
    evaluator = Engine(lambda engine, batch: fresh(batch))
    WeightsLoader(tmp_path / "model.pt", fresh).attach(evaluator)
    evaluator.run([torch.ones(1, 2)])
    torch.testing.assert_close(fresh.state_dict(), trained.state_dict())

    other = Engine(lambda engine, batch: batch)
    WeightsLoader(tmp_path / "model.pt", torch.nn.Linear(3, 1), model_name="wide").attach(other)
    with pytest.raises(ValueError, match=r"model\.pt does not match the model \(wide\): 1 shape mismatches"):
        other.run([torch.ones(1, 2)])


def test_a_resumed_evaluator_starts_from_the_recorded_best():
    from types import SimpleNamespace

    from cxrdoll.engines.recorder import restore_best_metric

    fresh = SimpleNamespace(state=SimpleNamespace(best_metric=-1, best_metric_epoch=-1))
    restore_best_metric(fresh, {"epoch": 2, "mean_auroc": 0.81}, "mean_auroc")
    assert (fresh.state.best_metric, fresh.state.best_metric_epoch) == (0.81, 2)
    restore_best_metric(fresh, {"epoch": 5, "mean_auroc": 0.5}, "mean_auroc")  # already running: left alone
    assert fresh.state.best_metric_epoch == 2
    untouched = SimpleNamespace(state=SimpleNamespace(best_metric=-1, best_metric_epoch=-1))
    restore_best_metric(untouched, {"epoch": 1, "mean_auroc": None}, "mean_auroc")  # undefined metric
    restore_best_metric(untouched, None, "mean_auroc")
    assert untouched.state.best_metric_epoch == -1


def _validations(interval: int, max_epochs: int, budget_s: float | None = None) -> list[int]:
    """The trainer epochs at which a real MONAI evaluator ran under ``ValidationEveryNAndLast``."""
    from monai.engines import SupervisedEvaluator

    from cxrdoll.engines.validation import ValidationEveryNAndLast

    net = torch.nn.Linear(2, 1)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[{"image": torch.ones(1, 2),
                                    "label": torch.ones(1, 1)}], network=net, decollate=False)
    runs: list[int] = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: runs.append(e.state.epoch))
    trainer = _trainer(net)
    ValidationEveryNAndLast(interval, evaluator).attach(trainer)
    WallClockBudget(budget_s, evaluator).attach(trainer)
    trainer.run([torch.ones(1, 2)] * 3, max_epochs=max_epochs)
    return runs


@pytest.mark.parametrize(("interval", "max_epochs", "epochs"), [(2, 5, [2, 4, 5]), (3, 3, [3]), (5, 2, [2]), (1, 2, [1, 2])])
def test_the_final_epoch_is_always_validated(interval, max_epochs, epochs):
    """Otherwise the last epochs' weights could never become model.pt; interval > max_epochs left no model."""
    assert _validations(interval, max_epochs) == epochs


def test_a_budget_stop_is_validated_once():
    assert _validations(2, 1, budget_s=1e-9) == [1]


def test_validation_interval_must_be_positive():
    from cxrdoll.engines.validation import ValidationEveryNAndLast

    with pytest.raises(ValueError, match="val_interval must be a positive number of epochs, got 0"):
        ValidationEveryNAndLast(0)


def test_amp_dtype_names_and_a_float32_request_is_refused_with_the_way_to_get_it():
    from cxrdoll.engines.amp import amp_dtype

    assert amp_dtype("bfloat16") is torch.bfloat16 and amp_dtype("bf16") is torch.bfloat16
    assert amp_dtype("float16") is torch.float16 and amp_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match=r"amp_dtype 'fp32' is not a reduced precision: use bfloat16 or float16, "
                                         r"or --amp false to run in float32"):
        amp_dtype("fp32")
    with pytest.raises(ValueError, match=r"unknown AMP dtype 'bfloat17'; expected one of \["):
        amp_dtype("bfloat17")


def test_trained_settings_come_from_the_record_beside_the_checkpoint(tmp_path):
    from cxrdoll.engines.recorder import trained_setting
    from cxrdoll.io import write_json_atomic

    classifier, segmenter, bare = tmp_path / "cls", tmp_path / "seg", tmp_path / "bare"
    write_json_atomic(classifier / "metrics.json", {"best": {}, "run": {"network_name": "resnet50", "image_size": 224}})
    write_json_atomic(segmenter / "validation_history.json", {"encoder_name": "resnet10", "class_names": ["lung"]})
    bare.mkdir()
    assert trained_setting(classifier / "model.pt", "image_size", 320) == 224
    assert trained_setting(classifier / "model.pt", "network_name", "densenet121") == "resnet50"
    assert trained_setting(segmenter / "model.pt", "class_names", ["a", "b"]) == ["lung"]
    assert trained_setting(segmenter / "model.pt", "image_size", 320) == 320  # not recorded there
    assert trained_setting(bare / "model.pt", "image_size", 320) == 320  # no record at all
    assert trained_setting(None, "encoder_name", "densenet121") == "densenet121"  # no checkpoint (training from scratch)
    (bare / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match="metrics.json: not valid JSON"):
        trained_setting(bare / "model.pt", "image_size", 320)


def test_a_run_resumed_after_a_budget_stop_keeps_the_better_model_the_stop_saved(tmp_path):
    """The budget's mid-epoch validation saves model.pt and metrics.json but no checkpoint: the resumed
    run must still count it as the best, or a worse later epoch overwrites that model."""
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import LrScheduleHandler, from_engine

    from cxrdoll.engines.auroc import MaskedAUROC
    from cxrdoll.engines.loss import MaskedBCEWithLogitsLoss
    from cxrdoll.engines.recorder import ValidationRecorder
    from cxrdoll.engines.validation import ValidationEveryNAndLast

    scores = iter([0.70, 0.80, 0.90, 0.85, 0.82])  # one per validation, in the order they run

    class ScriptedAUROC(MaskedAUROC):
        def compute(self):
            super().compute()
            self.mean = next(scores)
            return self.mean

    torch.manual_seed(0)
    train = [{"image": torch.randn(4), "label": torch.randint(0, 2, (14,)).float()} for _ in range(8)]
    val = [{"image": torch.randn(4), "label": torch.tensor([i % 2] * 14).float()} for i in range(8)]

    def run() -> None:
        net = torch.nn.Linear(4, 14)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
        metric = ScriptedAUROC(output_transform=from_engine(["pred", "label"]))
        recorder = ValidationRecorder(metric, tmp_path / "metrics.json", net, tmp_path / "model.pt", run={"image_size": 4})
        evaluator = SupervisedEvaluator(device="cpu", val_data_loader=torch.utils.data.DataLoader(val, batch_size=4),
                                        network=net, key_val_metric={"val_mean_auroc": metric}, val_handlers=[recorder],
                                        decollate=False)
        trainer = SupervisedTrainer(device="cpu", max_epochs=4, train_data_loader=torch.utils.data.DataLoader(train, batch_size=2),
                                    network=net, optimizer=opt, loss_function=MaskedBCEWithLogitsLoss(), decollate=False)
        for handler in (LrScheduleHandler(schedule), ValidationEveryNAndLast(1, evaluator),
                        ResumableCheckpoint(tmp_path / "checkpoint.pt", {"network": net, "optimizer": opt,
                                                                          "lr_scheduler": schedule, "recorder": recorder}),
                        WallClockBudget(10, evaluator, clock=lambda: trainer.state.iteration)):  # "seconds" = iterations
            handler.attach(trainer)
        trainer.run()

    run()  # 4 iterations an epoch: validations after epochs 1 and 2, then the budget's at iteration 10 (0.90)
    stopped_best = (tmp_path / "model.pt").read_bytes()
    run()  # resumes after epoch 2; epochs 3 and 4 validate at 0.85 and 0.82
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "model.pt").read_bytes() == stopped_best
    assert (metrics["best"]["epoch"], metrics["best"]["mean_auroc"]) == (3, 0.90)
    # epoch 3, stopped and then run in full, is recorded once, as run in full
    assert [(h["epoch"], h["mean_auroc"]) for h in metrics["history"]] == [(1, 0.70), (2, 0.80), (3, 0.85), (4, 0.82)]


def test_a_checkpoint_named_by_another_path_does_not_block_a_resume_its_content_does():
    """Relative against absolute, or moved: the sha256 both records carry decides, not the path."""
    from cxrdoll.engines.recorder import refuse_other_settings

    stored = {"init_ckpt": "/runs/cls/model.pt", "init_ckpt_sha256": "aa", "image_size": 64}
    refuse_other_settings(stored, {**stored, "init_ckpt": "model.pt"})
    with pytest.raises(ValueError, match=r"trained with init_ckpt_sha256='aa', not 'bb'"):
        refuse_other_settings(stored, {**stored, "init_ckpt": "model.pt", "init_ckpt_sha256": "bb"})
    with pytest.raises(ValueError, match=r"init_ckpt='/runs/cls/model.pt', not 'model.pt'"):  # no content to compare
        refuse_other_settings({"init_ckpt": "/runs/cls/model.pt"}, {"init_ckpt": "model.pt"})


def test_a_checkpoint_lacking_an_object_of_the_run_is_refused_but_one_without_a_scaler_resumes(tmp_path):
    """Resuming without the optimizer's saved state would silently restart its momentum; a checkpoint
    from before the grad scaler was saved resumes with the run's fresh scaler instead."""
    net = torch.nn.Linear(2, 1)
    first = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": net}).attach(first)
    first.run([torch.ones(1, 2)], max_epochs=1)
    with_optimizer = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": net, "optimizer": torch.optim.SGD(net.parameters(), lr=0.1)}
                        ).attach(with_optimizer)
    with pytest.raises(KeyError, match=r"c\.pt: resume checkpoint lacks \['optimizer'\]"):
        with_optimizer.run([torch.ones(1, 2)], max_epochs=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert _run_with_scaler(tmp_path / "c.pt", scaler, 2).state.iteration == 2 and scaler.get_scale() == 1024.0


def test_an_enabled_scaler_resumes_at_its_saved_scale(tmp_path):
    """Only an empty (never scaling) saved state gives a fresh scaler: an fp16 run resumes its own scale."""
    _run_with_scaler(tmp_path / "c.pt", torch.amp.GradScaler("cpu", init_scale=512.0), 1)
    resumed = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _run_with_scaler(tmp_path / "c.pt", resumed, 2)
    assert resumed.get_scale() == 512.0


def test_a_resume_under_other_settings_names_the_setting_before_the_architecture_it_changed(tmp_path):
    """Another network_name also changes the weights' shapes: the message names the setting, not every key."""
    from cxrdoll.engines.auroc import MaskedAUROC
    from cxrdoll.engines.recorder import ValidationRecorder

    def run(name: str, net: torch.nn.Module) -> None:
        trainer = _trainer(net)
        recorder = ValidationRecorder(MaskedAUROC(), tmp_path / "metrics.json", run={"network_name": name})
        ResumableCheckpoint(tmp_path / "c.pt", {"network": net, "recorder": recorder}).attach(trainer)
        trainer.run([torch.ones(1, 2)], max_epochs=2)

    run("narrow", torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"c\.pt: the resume checkpoint was trained with network_name='narrow', not "
                                         r"'wide': resume with its settings, or start over"):
        run("wide", torch.nn.Linear(2, 3))


def test_an_optimizer_that_does_not_fit_the_checkpoint_names_the_file(tmp_path):
    """torch's own refusal does not say which file it was loading."""
    net = torch.nn.Linear(2, 1)
    first = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": net, "optimizer": torch.optim.SGD(net.parameters(), lr=0.1)}
                        ).attach(first)
    first.run([torch.ones(1, 2)], max_epochs=1)
    split = torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias]}], lr=0.1)
    resumed = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": net, "optimizer": split}).attach(resumed)
    with pytest.raises(ValueError, match=r"c\.pt: .*parameter groups.*: resume with its settings, or start over"):
        resumed.run([torch.ones(1, 2)], max_epochs=2)


def test_wrapped_networks_save_and_load_the_plain_modules_keys(tmp_path):
    """DDP (``module``) and torch.compile (``_orig_mod``) prefix every key: checkpoints must move between set-ups."""
    from cxrdoll.engines.checkpoint import unwrap_module

    net = torch.nn.Linear(2, 1)
    wrapped = torch.nn.DataParallel(torch.compile(net))  # not run: construction compiles nothing
    assert unwrap_module(wrapped) is net
    trainer = _trainer(net)
    ResumableCheckpoint(tmp_path / "c.pt", {"network": wrapped}).attach(trainer)
    trainer.run([torch.ones(1, 2)], max_epochs=1)
    assert sorted(torch.load(tmp_path / "c.pt", weights_only=True)["network"]) == ["bias", "weight"]

    torch.save(net.state_dict(), tmp_path / "model.pt")
    fresh = torch.nn.Linear(2, 1)
    evaluator = Engine(lambda engine, batch: None)
    WeightsLoader(tmp_path / "model.pt", torch.nn.DataParallel(fresh)).attach(evaluator)
    evaluator.run([0])
    torch.testing.assert_close(fresh.state_dict(), net.state_dict())


def test_a_stretched_cosine_sets_the_rates_it_reports():
    """The logged rate (``get_last_lr``) must be the one the optimizer uses after the stretch."""
    from cxrdoll.engines.checkpoint import stretch_cosine

    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    schedule.step()  # epoch 1 of 2: 0.5
    stretch_cosine(schedule, 4, logging.getLogger("test"))
    expected = (1 + math.cos(math.pi / 4)) / 2  # epoch 1 of 4
    assert opt.param_groups[0]["lr"] == pytest.approx(expected) and schedule.get_last_lr() == pytest.approx([expected])


def test_epoch_schedulers_for_each_lr_schedule_and_a_time_schedule_needs_the_budget():
    """'epochs': cosine reaching zero at max_epochs; 'time': constant, the wall-clock cosine anneals."""
    from cxrdoll.engines.budget import epoch_scheduler

    def rates(schedule: str, seconds: float | None) -> list[float]:
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
        scheduler = epoch_scheduler(opt, schedule, 2, seconds)
        seen = []
        for _ in range(2):
            seen.append(round(opt.param_groups[0]["lr"], 6))
            opt.step()
            scheduler.step()
        return seen + [round(opt.param_groups[0]["lr"], 6)]

    assert rates("epochs", None) == [1.0, 0.5, 0.0]
    assert rates("time", 60.0) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="lr_schedule 'time' anneals over max_train_seconds: set it too"):
        rates("time", None)
    with pytest.raises(ValueError, match="lr_schedule must be 'epochs' or 'time', got 'cosine'"):
        rates("cosine", None)
