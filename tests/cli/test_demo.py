"""`cvkit demo` (the README's main command): train, evaluate, infer; a second run reuses the finished run."""

import json

import pytest
import torch

import cvkit.engine.train as engine_train
from cvkit.cli.demo import LIGHT_OVERRIDES, _load_config, light_wanted
from cvkit.cli.main import main as cvkit
from cvkit.engine.checkpoint import load_checkpoint

TINY = [
    "--set", "data.synthetic.num_train=4", "--set", "data.synthetic.num_val=3", "--set", "data.batch_size=4",
    "--set", "data.num_workers=0", "--set", "train.epochs=1", "--set", "train.progress=false",
    "--set", "train.tensorboard=false", "--set", "train.plots=false",
]


def test_demo_trains_evaluates_infers_then_reuses_the_run(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    args = ["demo", "--run-dir", str(run_dir), "--images", "2", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--light", "off", *TINY]
    assert cvkit(args) == 0
    out = capsys.readouterr().out
    # the default recipe (the dense detector) to the demo's time budget, the epochs capped by --set
    assert "[1/3] train: training resnet18 dense at 300x300 for 7 min (at most 1 epochs)" in out
    assert "mAP@0.5 = " in out and "COCO AP@[.5:.95] = " in out
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert f"mAP@0.5 = {metrics['AP50']:.4f}" in out
    annotated = sorted((run_dir / "infer").glob("0*.jpg"))
    assert [p.stem for p in annotated] == ["000001", "000002"]  # the first two val images
    assert (run_dir / "infer" / "grid.jpg").is_file() and (run_dir / "infer" / "000001.json").is_file()

    stamp = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert cvkit(args) == 0
    assert "already holds a finished run of this config" in capsys.readouterr().out
    assert (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp  # not trained again

    # a changed config trains afresh (and drops the other run's checkpoints)
    assert cvkit([*args, "--set", "train.lr=0.005", "--images", "0", "--minutes", "0"]) == 0
    out = capsys.readouterr().out
    assert "[1/3] train: training resnet18 dense at 300x300 for 1 epochs" in out  # no budget: the epochs
    assert "[3/3] infer: skipped (--images 0)" in out
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["best.pt", "last.pt"]


def test_demo_rejects_unknown_keys(capsys):
    assert cvkit(["demo", "--set", "train.epoch=3"]) == 2
    assert "did you mean" in capsys.readouterr().err.lower()


@pytest.mark.parametrize("native_bf16, amp, cuda, mode, own_config, light", [
    (False, True, False, "auto", False, True),    # float32 CPU: the light variant
    (True, True, False, "auto", False, False),    # native bf16: the full recipe
    (True, False, False, "auto", False, True),    # bf16 CPU with amp off trains in float32
    (False, True, True, "auto", False, False),    # CUDA: the full recipe
    (False, True, False, "auto", True, False),    # the user's own --config is trained as it is
    (True, True, False, "on", True, True),        # asked for
    (False, True, False, "off", False, False),
])
def test_light_variant_is_chosen_for_float32_cpus(monkeypatch, native_bf16, amp, cuda, mode, own_config, light):
    monkeypatch.setattr(engine_train, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(engine_train, "resolve_device",
                        lambda name="auto", distributed=False: torch.device("cuda" if cuda else "cpu"))
    cfg = _load_config(None, [f"train.amp={str(amp).lower()}"])
    assert light_wanted(mode, own_config, cfg) is light


def test_demo_light_variant_trains_the_light_model_and_set_wins(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert cvkit(["demo", "--run-dir", str(run_dir), "--images", "0", "--minutes", "0", "--light", "on",
                  "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY, "--set", "model.neck_channels=24"]) == 0
    out = capsys.readouterr().out
    assert "[1/3] train: training resnet18 dense at 256x256 for 1 epochs" in out
    assert "the light variant of the recipe: asked for (--light on); " + ", ".join(LIGHT_OVERRIDES) in out
    config = load_checkpoint(run_dir / "checkpoints" / "last.pt")["extra"]["config"]
    assert config["model"]["backbone_width"] == 0.25 and config["model"]["head_convs"] == 2
    assert config["anchors"]["image_size"] == [256, 256] and config["transforms"]["size"] == [256, 256]
    assert config["model"]["neck_channels"] == 24  # --set wins over the light variant (32)
