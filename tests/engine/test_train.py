"""fit / train_one_epoch / evaluate on tiny stand-ins: training works, resume reproduces, outputs are written."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml

from cvkit.data.loader import build_dataloader
from cvkit.engine import TrainConfig, checkpoint_weights, evaluate, fit, load_checkpoint, train_one_epoch
from cvkit.engine.optim import build_optimizer, model_param_groups
from tests.engine._tiny import (
    ScriptedEvaluator,
    TinyCriterion,
    TinyDetection,
    TinyDetector,
    TinyPostprocessor,
    noisy,
    tiny_loader,
)

QUIET = {"progress": False, "console_table": False, "plots": False, "tensorboard": False}


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, lr=0.05, warmup_epochs=0.5, weight_decay=1e-4, **QUIET)
    base.update(kw)
    return TrainConfig(**base)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Crash(RuntimeError):
    pass


class CrashingCriterion(TinyCriterion):
    """Raises on training call number ``crash_at`` (1-based): a run killed in the middle of an epoch."""

    def __init__(self, crash_at: int, **kw):
        super().__init__(**kw)
        self.crash_at = crash_at

    def forward(self, outputs, targets):
        if torch.is_grad_enabled() and len(self.losses) + 1 == self.crash_at:
            raise Crash("killed")
        return super().forward(outputs, targets)


def _run(tmp_path, name, criterion, cfg, resume=None, evaluator_values=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6)):
    torch.manual_seed(0)
    model = TinyDetector(dropout=0.3, batchnorm=True)
    return fit(
        model,
        criterion,
        TinyPostprocessor(),
        tiny_loader(num_images=12, batch_size=4),
        tiny_loader(num_images=8, batch_size=4, shuffle=False, transform=None),
        cfg,
        tmp_path / name,
        evaluator=ScriptedEvaluator(evaluator_values),
        resume=resume,
        extra_state={"class_names": ["a", "b", "c"], "config": {"train": {"epochs": cfg.epochs}, "data": {}}},
    ), model


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path):
    # dropout (torch RNG), numpy/python draws in the loss, shuffling + seeded augmentation, SGD momentum,
    # warmup + cosine, EMA, BatchNorm statistics: all must continue exactly after a crash in epoch 3.
    cfg = _cfg(ema=True, ema_warmup_steps=3, clip_grad_norm=5.0)
    full = TinyCriterion(global_rng=True)
    history_full, model_full = _run(tmp_path, "full", full, cfg)
    assert len(full.losses) == 4 * 3

    crashing = CrashingCriterion(crash_at=2 * 3 + 2, global_rng=True)  # second step of epoch 3
    with pytest.raises(Crash):
        _run(tmp_path, "crashed", crashing, cfg)
    assert crashing.losses == full.losses[:7]
    assert load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")["epoch"] == 2

    resumed = TinyCriterion(global_rng=True)
    history_resumed, model_resumed = _run(
        tmp_path,
        "crashed",
        resumed,
        cfg,
        resume=tmp_path / "crashed" / "checkpoints" / "last.pt",
        evaluator_values=(0.3, 0.4),  # the scripted metric of epochs 3 and 4
    )
    assert resumed.losses == full.losses[6:]  # bit-identical floats, epochs 3 and 4
    clock = ("time", "time_used", "eval_time")  # wall-clock columns
    drop_time = [{k: v for k, v in row.items() if k not in clock} for row in history_resumed]
    assert drop_time == [{k: v for k, v in row.items() if k not in clock} for row in history_full]
    for a, b in zip(model_full.state_dict().values(), model_resumed.state_dict().values()):
        assert torch.equal(a, b)
    state_full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    assert checkpoint_weights(state_full) is state_full["ema"]["module"]
    assert checkpoint_weights(state_full, prefer_ema=False) is state_full["model"]
    ema_full = state_full["ema"]
    ema_resumed = load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")["ema"]
    assert ema_full["updates"] == ema_resumed["updates"] == 12
    for key, value in ema_full["module"].items():
        assert torch.equal(value, ema_resumed["module"][key]), key


def test_resume_is_exact_with_loader_worker_processes(tmp_path):
    # augmentation seeds come from (seed, epoch, index), not from the workers' RNG: 2 workers change nothing
    def loader():
        return build_dataloader(TinyDetection(8), noisy, batch_size=4, num_workers=2, seed=0, persistent_workers=True)

    cfg = _cfg(epochs=3)
    torch.manual_seed(0)
    full = TinyCriterion(global_rng=True)
    fit(TinyDetector(dropout=0.3), full, None, loader(), None, cfg, tmp_path / "full")
    torch.manual_seed(0)
    with pytest.raises(Crash):
        fit(TinyDetector(dropout=0.3), CrashingCriterion(4, global_rng=True), None, loader(), None, cfg, tmp_path / "b")
    resumed = TinyCriterion(global_rng=True)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    fit(TinyDetector(dropout=0.3), resumed, None, loader(), None, cfg, tmp_path / "b", resume=last)
    assert resumed.losses == full.losses[2:] and len(resumed.losses) == 4


def test_resume_extends_the_number_of_epochs(tmp_path):
    criterion = TinyCriterion()
    history, _ = _run(tmp_path, "run", criterion, _cfg(epochs=2, schedule="constant"))
    assert [row["epoch"] for row in history] == [1, 2]
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    more = TinyCriterion()
    history, _ = _run(tmp_path, "run", more, _cfg(epochs=3, schedule="constant"), resume=last)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert len(more.losses) == 3  # one epoch of 3 steps, not three epochs
    state = load_checkpoint(last)
    assert state["epoch"] == 3 and state["global_step"] == 9
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        assert [float(r["epoch"]) for r in csv.DictReader(f)] == [1.0, 2.0, 3.0]
    done = TinyCriterion()
    history, _ = _run(tmp_path, "run", done, _cfg(epochs=3, schedule="constant"), resume=last)
    assert len(history) == 3 and done.losses == []  # already finished: nothing to train


def test_fit_trains_and_writes_the_run_folder(tmp_path, capsys):
    torch.manual_seed(0)
    criterion = TinyCriterion()
    cfg = TrainConfig(epochs=6, lr=0.05, warmup_epochs=0, eval_every=2, progress=False, tensorboard=True)
    evaluator = ScriptedEvaluator([0.2, 0.5, 0.4])
    history = fit(
        TinyDetector(),
        criterion,
        TinyPostprocessor(),
        tiny_loader(num_images=16),
        tiny_loader(num_images=8, shuffle=False, transform=None),
        cfg,
        tmp_path,
        evaluator=evaluator,
        extra_state={"config": {"train": {"epochs": 6}, "model": {"backbone": "tiny"}}},
    )
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert evaluator.calls == 3 and evaluator.num_images == 8  # epochs 2, 4, 6; every val image
    assert [("AP" in row) for row in history] == [False, True, False, True, False, True]
    for name in ("config.yaml", "environment.json", "metrics.csv", "losses.png", "metrics.png", "lr.png"):
        assert (tmp_path / name).is_file(), name
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == {"backbone": "tiny"}
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert environment["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert environment["python"].count(".") == 2
    assert (tmp_path / "eval_report.txt").read_text().startswith("scripted report after 3")
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 4 and best["best_metric"] == 0.5
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 6 and last["best_epoch"] == 4 and last["extra"]["config"]["model"]["backbone"] == "tiny"
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "history", "train_config"}
    out = capsys.readouterr().out
    summary, out = out.split("\n", 1)
    assert summary.startswith("model TinyDetector: 5 layers")  # the model summary, printed first
    assert environment["model"]["parameters"] == sum(p.numel() for p in TinyDetector().parameters())
    header = out.splitlines()[0].split()
    assert header == ["epoch", "loss", "loss_cls", "loss_box", "val_loss", "AP", "AP50", "lr", "time"]
    assert out.splitlines()[1].split()[0] == "1" and out.splitlines()[1].split()[5] == "-"  # AP not yet measured
    assert (tmp_path / "tensorboard").is_dir() == _has_tensorboard()
    assert "best AP 0.5000 at epoch 4" in out
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["AP"] == "" and float(rows[1]["AP"]) == 0.2


def test_early_stopping_on_a_min_metric(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = _cfg(epochs=20, monitor="val_loss", early_stop_patience=2, lr=1e-6, schedule="constant", warmup_epochs=0)
    evaluator = ScriptedEvaluator([0.0])
    history = fit(
        TinyDetector(),
        TinyCriterion(),
        TinyPostprocessor(),
        tiny_loader(num_images=8),
        tiny_loader(num_images=4, shuffle=False, transform=None),
        # lr so small that val_loss changes by far less than min_delta: no improvement after epoch 1
        TrainConfig(**{**cfg.__dict__, "early_stop_min_delta": 0.01, "console_table": True}),
        tmp_path,
        evaluator=evaluator,
    )
    assert len(history) == 3  # best at 1, no improvement at 2 and 3 -> stop
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1
    assert "early stop at epoch 3" in capsys.readouterr().out


def test_unknown_monitor_names_the_available_metrics(tmp_path):
    with pytest.raises(KeyError, match="mAP.*'AP', 'AP50', 'val_loss'"):
        fit(
            TinyDetector(),
            TinyCriterion(),
            TinyPostprocessor(),
            tiny_loader(num_images=4),
            tiny_loader(num_images=4, shuffle=False, transform=None),
            _cfg(epochs=1, monitor="mAP"),
            tmp_path,
            evaluator=ScriptedEvaluator([0.1]),
        )


def test_a_metric_monitor_without_an_evaluator_is_refused_before_training(tmp_path):
    criterion = TinyCriterion()
    with pytest.raises(ValueError, match="needs an evaluator"):
        fit(TinyDetector(), criterion, None, tiny_loader(4), tiny_loader(4), _cfg(monitor="AP"), tmp_path)
    assert criterion.calls == 0 and not tmp_path.joinpath("checkpoints").exists()


def test_train_one_epoch_clips_the_gradient_norm():
    model = TinyDetector()
    cfg = _cfg(lr=1e-3, weight_decay=0.0)
    optimizer = build_optimizer(model_param_groups(model, cfg), cfg)
    norms = []
    step = optimizer.step

    def spy_step(*args, **kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    optimizer.step = spy_step
    loader = tiny_loader(num_images=8, batch_size=4)
    train_one_epoch(model, TinyCriterion(), optimizer, loader, "cpu", 0, clip_grad_norm=0.0)
    unclipped = list(norms)
    assert max(unclipped) > 0.05
    norms.clear()
    train_one_epoch(model, TinyCriterion(), optimizer, loader, "cpu", 0, clip_grad_norm=0.05)
    assert len(norms) == 2 and all(n <= 0.05 + 1e-6 for n in norms)


def test_train_one_epoch_rejects_a_non_finite_loss():
    class NanCriterion(TinyCriterion):
        def forward(self, outputs, targets):
            losses = super().forward(outputs, targets)
            return {**losses, "loss": losses["loss"] * math.nan}

    model = TinyDetector()
    cfg = _cfg()
    optimizer = build_optimizer(model_param_groups(model, cfg), cfg)
    with pytest.raises(FloatingPointError, match="epoch 3, step 0"):
        train_one_epoch(model, NanCriterion(), optimizer, tiny_loader(num_images=4), "cpu", 2)


def test_evaluate_averages_val_losses_and_restores_the_mode():
    model = TinyDetector(dropout=0.5).train()
    criterion = TinyCriterion()
    loader = tiny_loader(num_images=8, batch_size=4, shuffle=False, transform=None)
    evaluator = ScriptedEvaluator([0.7])
    metrics = evaluate(model, criterion, TinyPostprocessor(), loader, "cpu", evaluator)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = [criterion(model(b["images"]), b["targets"]) for b in loader]
    assert metrics["val_loss"] == pytest.approx(sum(float(e["loss"]) for e in expected) / 2)
    assert metrics["val_loss_box"] == pytest.approx(sum(float(e["loss_box"]) for e in expected) / 2)
    assert metrics["AP"] == 0.7 and evaluator.num_images == 8


def test_the_seed_decides_the_run(tmp_path):
    def losses(seed, name):
        torch.manual_seed(0)  # the same initial weights every time
        criterion = TinyCriterion(global_rng=True)
        fit(
            TinyDetector(dropout=0.5), criterion, None, tiny_loader(8), None, _cfg(epochs=1, seed=seed), tmp_path / name
        )
        return criterion.losses

    assert losses(1, "a") == losses(1, "b")
    assert losses(1, "c") != losses(2, "d")


def test_amp_is_ignored_on_cpu_and_deterministic_mode_is_restored(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    seen = []

    class Spy(TinyCriterion):
        def forward(self, outputs, targets):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().forward(outputs, targets)

    history = fit(
        TinyDetector(),
        Spy(),
        None,
        tiny_loader(num_images=4),
        None,
        _cfg(epochs=1, amp=True, deterministic=not before, device="cpu"),
        tmp_path,
    )
    assert seen == [not before] and torch.are_deterministic_algorithms_enabled() == before
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["scaler"] == {} and state["ema"] is None
    assert checkpoint_weights(state) is state["model"]
    assert not (tmp_path / "checkpoints" / "best.pt").exists()  # nothing evaluated, nothing "best"


def test_progress_bars_go_to_stderr_and_the_table_to_stdout(tmp_path, capsys):
    fit(
        TinyDetector(),
        TinyCriterion(),
        TinyPostprocessor(),
        tiny_loader(num_images=8),
        tiny_loader(num_images=4, shuffle=False, transform=None),
        TrainConfig(epochs=1, progress=True, plots=False, tensorboard=False, monitor="val_loss"),
        tmp_path,
        evaluator=None,
    )
    captured = capsys.readouterr()
    assert "epoch 1" in captured.err and "eval" in captured.err  # tqdm bars of the train and val passes
    assert captured.out.splitlines()[0].startswith("model TinyDetector")
    assert captured.out.splitlines()[1].split() == ["epoch", "loss", "loss_cls", "loss_box", "val_loss", "lr", "time"]


def test_autocast_dtype_follows_amp_and_amp_cpu(monkeypatch):
    from cvkit.engine import train as train_mod

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train_mod.autocast_dtype(_cfg(amp=True), cuda) is torch.float16
    assert train_mod.autocast_dtype(_cfg(amp=False), cuda) is None
    assert train_mod.autocast_dtype(_cfg(amp=True, amp_cpu="bfloat16"), cpu) is torch.bfloat16
    assert train_mod.autocast_dtype(_cfg(amp=False, amp_cpu="bfloat16"), cpu) is None  # amp: false turns both off
    assert train_mod.autocast_dtype(_cfg(amp=True, amp_cpu="none"), cpu) is None
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: True)
    assert train_mod.autocast_dtype(_cfg(amp=True, amp_cpu="auto"), cpu) is torch.bfloat16
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    assert train_mod.autocast_dtype(_cfg(amp=True, amp_cpu="auto"), cpu) is None


class _DtypeRecorder(TinyCriterion):
    def __init__(self):
        super().__init__()
        self.dtypes: list[tuple[bool, torch.dtype]] = []

    def forward(self, outputs, targets):
        self.dtypes.append((torch.is_grad_enabled(), outputs["cls_logits"].dtype))
        return super().forward(outputs, targets)


@pytest.mark.parametrize(("amp_cpu", "dtype"), [("bfloat16", torch.bfloat16), ("none", torch.float32)])
def test_cpu_autocast_runs_training_and_evaluation_in_the_chosen_dtype(tmp_path, amp_cpu, dtype):
    criterion = _DtypeRecorder()  # the tiny detector's heads are nn.Linear: autocast runs them in bfloat16
    rows = fit(TinyDetector(), criterion, TinyPostprocessor(), tiny_loader(8, 4), tiny_loader(4, 4, shuffle=False),
               _cfg(epochs=1, amp_cpu=amp_cpu), tmp_path / "run", evaluator=ScriptedEvaluator([0.5]))
    assert {d for _, d in criterion.dtypes} == {dtype}
    assert [grad for grad, _ in criterion.dtypes] == [True, True, False]  # 2 train steps, 1 eval batch
    assert math.isfinite(rows[-1]["loss"]) and math.isfinite(rows[-1]["val_loss"])
    weights = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())  # master weights
