"""`cvkit demo` (the README's main command): train, evaluate, infer; a second run reuses the finished run."""

import json

from cvkit.cli.main import main as cvkit

TINY = [
    "--set", "data.synthetic.num_train=4", "--set", "data.synthetic.num_val=3", "--set", "data.batch_size=4",
    "--set", "data.num_workers=0", "--set", "train.epochs=1", "--set", "train.progress=false",
    "--set", "train.tensorboard=false", "--set", "train.plots=false",
]


def test_demo_trains_evaluates_infers_then_reuses_the_run(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    args = ["demo", "--run-dir", str(run_dir), "--images", "2", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            *TINY]
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
