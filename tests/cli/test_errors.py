"""What a user sees when a command fails: ``cvkit CMD: WHAT [kind]`` (+ ``  fix: ...``), exit 2, no traceback.

Every expected failure goes through the real entry point (``cvkit.cli.main.main``) on a tiny COCO set (four
40x60 images, one class) and a checkpoint made without training (a fresh 64x64 resnet18 SSD), so the whole
file runs in seconds. Two subprocess runs check the real exit status and stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cvkit.cli.main import main as cvkit
from cvkit.config import ConfigError, apply_overrides
from cvkit.data.errors import DataError
from cvkit.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, save_checkpoint

from ..data.helpers import write_coco

REPO = Path(__file__).resolve().parents[2]
IMAGES = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60} for i in range(1, 5)]
ANNS = [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20]} for i in range(1, 5)]
TINY = {
    "data": {"format": "coco", "coco_ann_file": "instances_{split}.json", "coco_image_dir": "images",
             "batch_size": 2, "num_workers": 0},
    "transforms": {"size": [64, 64]},
    "anchors": {"image_size": [64, 64], "steps": [8, 16, 32, 64, 64, 64]},
    "model": {"num_valid_extras": 0},
    "train": {"epochs": 1, "progress": False, "tensorboard": False, "plots": False, "amp": False},
}
PROGRESS = re.compile(r"\d+/\d+ \[|it/s\]|s/it\]")  # a tqdm bar on stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(root, config, checkpoint)``: the COCO set (plus instances_bad.json, a non-positive box in
    annotations[1]), the YAML run config pointing at it, a checkpoint of an untrained detector for it."""
    from cvkit.models.build import build_detector
    from cvkit.run_config import load_run_config
    from cvkit.tasks.detect import checkpoint_extra

    base = tmp_path_factory.mktemp("errors").resolve()
    root = base / "coco"
    for split in ("train", "val"):
        write_coco(root, IMAGES, ANNS, [{"id": 1, "name": "x"}], name=f"instances_{split}.json")
    bad = [dict(a) for a in ANNS]
    bad[1]["bbox"] = [1, 1, -3, 4]
    write_coco(root, IMAGES, bad, [{"id": 1, "name": "x"}], name="instances_bad.json")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "root": str(root)}}))
    cfg = load_run_config(config)
    model, _, _ = build_detector(cfg.model, cfg.loss, cfg.postprocess, cfg.anchors, num_classes=1)
    checkpoint = save_checkpoint(base / "run" / "checkpoints" / "last.pt", {
        "format": CHECKPOINT_FORMAT, "version": 1, "epoch": 1, "model": model.state_dict(), "ema": None,
        "extra": checkpoint_extra(cfg, ("x",), [1]),
    })
    return root, config, checkpoint


def failure(capsys, argv: list[str]) -> list[str]:
    """Run ``cvkit ARGV``, check it exits 2 without a traceback; the lines it wrote to stderr (no progress bars)."""
    assert cvkit(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in re.split(r"[\r\n]+", err) if line.strip() and not PROGRESS.search(line)]


# --- data errors under on_error: raise --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_bad_annotation_is_one_line_with_the_fix(setup, capsys, tmp_path, command):
    root, config, checkpoint = setup
    args = ["--checkpoint", str(checkpoint)] if command == "eval" else [str(config), "--run-dir", str(tmp_path)]
    lines = failure(capsys, [command, *args, "--set", "data.coco_ann_file=instances_bad.json"])
    assert lines == [
        f"cvkit {command}: {root}/instances_bad.json: annotations[1] (id=2): bbox [1, 1, -3, 4] has a non-positive "
        "width or height [bad_box]",
        "  fix: fix or remove it, or --set data.on_error=skip to drop and count bad items "
        "(`cvkit check-data --config CONFIG` lists them all)",
    ]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_image_is_one_line_also_from_a_loader_worker(setup, capsys, tmp_path, workers):
    """In a DataLoader worker the DataError comes back as torch's RuntimeError("Caught DataError in DataLoader
    worker process 0. Original Traceback ..."): still the DataError's line."""
    root, _, checkpoint = setup
    copy = tmp_path / "coco"
    write_coco(copy, IMAGES, ANNS, [{"id": 1, "name": "x"}], name="instances_val.json")
    cut = copy / "images" / "3.png"
    cut.write_bytes(cut.read_bytes()[:100])
    lines = failure(capsys, ["eval", "--checkpoint", str(checkpoint), "--set", f"data.root={copy}",
                             "--set", f"data.num_workers={workers}"])
    assert lines[0] == f"cvkit eval: {cut.resolve()}: PNG data ends without an IEND chunk [truncated_image]"
    assert len(lines) == 2 and lines[1].startswith("  fix: ") and "data.on_error=skip" in lines[1]


def test_a_missing_dataset_root_is_one_line(setup, capsys, tmp_path):
    _, config, _ = setup
    lines = failure(capsys, ["train", str(config), "--run-dir", str(tmp_path), "--set", f"data.root={tmp_path}/nope"])
    assert lines == [
        f"cvkit train: {tmp_path}/nope: dataset root does not exist [missing_file]",
        "  fix: set data.root to the dataset folder (--set data.root=PATH)",
    ]


# --- checkpoints --------------------------------------------------------------------------------------------


def _command(name: str, checkpoint: Path, root: Path, config: Path, out: Path) -> list[str]:
    return {
        "infer": ["infer", "--checkpoint", str(checkpoint), str(root / "images" / "1.png"), "--out", str(out)],
        "eval": ["eval", "--checkpoint", str(checkpoint)],
        "export": ["export", "--checkpoint", str(checkpoint), "--out", str(out / "model.ts")],
        "train": ["train", str(config), "--resume", str(checkpoint), "--run-dir", str(out)],
    }[name]


COMMANDS = ["infer", "eval", "export", "train"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_checkpoint_is_one_line(setup, capsys, tmp_path, command):
    root, config, checkpoint = setup
    wrong = checkpoint.parent.parent / "last.pt"  # runs/NAME/last.pt: the file is runs/NAME/checkpoints/last.pt
    lines = failure(capsys, _command(command, wrong, root, config, tmp_path))
    assert lines == [f"cvkit {command}: checkpoint {wrong} does not exist [missing_file]",
                     f"  fix: did you mean {checkpoint}?"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unsafe_checkpoint_is_one_line_not_torchs_essay(setup, capsys, tmp_path, command):
    root, config, _ = setup
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": {"args": __import__("argparse").Namespace(a=1)}}, evil)
    lines = failure(capsys, _command(command, evil, root, config, tmp_path))
    assert lines == [
        f"cvkit {command}: {evil}: refused to load: it holds a pickled Python object (argparse.Namespace), not only "
        "tensors and plain containers (loading it could run code) [unsafe_checkpoint]",
        "  fix: re-save it from plain data (tensors, dicts, lists, numbers, strings), e.g. "
        "torch.save({'model': model.state_dict()}, path); cvkit never loads with weights_only=False",
    ]


@pytest.mark.parametrize("content", [b"", b"hello\n", b"PK\x03\x04 cut short"])
def test_an_unreadable_checkpoint_is_one_line(setup, capsys, tmp_path, content):
    root, config, _ = setup
    junk = tmp_path / "junk.pt"
    junk.write_bytes(content)
    lines = failure(capsys, _command("eval", junk, root, config, tmp_path))
    assert len(lines) == 2
    assert lines[0].startswith(f"cvkit eval: {junk}: not a readable checkpoint (")
    assert lines[0].endswith(") [unreadable_checkpoint]") and lines[1].startswith("  fix: the file is truncated")


def test_resume_is_checked_before_the_data_and_the_model_are_built(setup, capsys, tmp_path, monkeypatch):
    _, config, checkpoint = setup
    import cvkit.cli.train as train_cli

    def never(*args, **kwargs):
        raise AssertionError("built the run before checking --resume")

    monkeypatch.setattr(train_cli, "run", never)
    lines = failure(capsys, ["train", str(config), "--resume", str(tmp_path / "nope.pt"), "--run-dir", str(tmp_path)])
    assert lines == [f"cvkit train: checkpoint {tmp_path / 'nope.pt'} does not exist [missing_file]"]
    weights = save_checkpoint(tmp_path / "weights.pt", {"model": {}})  # plain data, not a training checkpoint
    lines = failure(capsys, ["train", str(config), "--resume", str(weights), "--run-dir", str(tmp_path)])
    assert lines[0] == f"cvkit train: {weights}: not a cvkit training checkpoint (format None) [not_cvkit_checkpoint]"
    assert checkpoint.is_file()  # the fixture's one passes the check (then `run` would build the run)
    with pytest.raises(AssertionError, match="before checking"):
        cvkit(["train", str(config), "--resume", str(checkpoint), "--run-dir", str(tmp_path)])


# --- the config: names it chooses, --set overrides ----------------------------------------------------------


def test_an_unknown_backbone_is_refused_when_the_config_is_loaded(setup, capsys, tmp_path):
    _, config, checkpoint = setup
    # the root does not exist: the datasets would fail first if they were built before the names were checked
    lines = failure(capsys, ["train", str(config), "--set", "model.backbone=resnet19", "--set", "data.root=/nope",
                             "--run-dir", str(tmp_path)])
    assert lines == ["cvkit train: --set model.backbone=resnet19: unknown name 'resnet19'; did you mean 'resnet18' or "
                     "'resnet50' or 'resnet34'? (valid: densenet121, resnet18, resnet34, resnet50, vgg16, vgg16_bn) "
                     "[config]"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "model": {"arch": "sdd"}}))
    lines = failure(capsys, ["train", str(bad), "--run-dir", str(tmp_path)])
    want = f"cvkit train: {bad}: model.arch: unknown name 'sdd'; did you mean 'ssd'? (valid: dense, ssd) [config]"
    assert lines == [want]
    lines = failure(capsys, ["eval", "--checkpoint", str(checkpoint), "--set", "model.backbone=vgg"])
    assert lines[0].startswith("cvkit eval: --set model.backbone=vgg: unknown name 'vgg'; did you mean 'vgg16'")


def test_errors_from_a_set_value_name_the_override_not_the_yaml(setup, capsys, tmp_path):
    _, config, _ = setup
    train = ["train", str(config), "--run-dir", str(tmp_path)]
    assert failure(capsys, [*train, "--set", "train.lr=abc"]) == [
        "cvkit train: --set train.lr=abc: expected a number, got 'abc' [config]"]
    assert failure(capsys, [*train, "--set", "train.lrr=0.1"]) == [
        "cvkit train: --set train.lrr=0.1: unknown config key 'train.lrr'; did you mean 'lr'? [config]"]
    assert failure(capsys, [*train, "--set", "train.lr"]) == [
        "cvkit train: --set train.lr: an override must look like key.path=value [config]"]
    assert failure(capsys, [*train, "--set", "train.lr=[1,"])[0].startswith(
        "cvkit train: --set train.lr=[1,: the value is not valid YAML (")
    assert failure(capsys, [*train, "--set", "transforms.size=[32, 32]"]) == [
        "cvkit train: --set transforms.size=[32, 32]: anchors.image_size [64, 64] must equal transforms.size [32, 32] "
        "(the network input the anchors are made for) [config]"]
    # the same mistake in the YAML file names the file and the key
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "train": {"lr": "abc"}}))
    assert failure(capsys, ["train", str(bad), "--run-dir", str(tmp_path)]) == [
        f"cvkit train: {bad}: train.lr: expected a number, got 'abc' [config]"]
    # an override that fixes the file's mistake makes it go away
    assert failure(capsys, ["train", str(bad), "--set", "train.lr=0.1", "--set", "data.root=/nope"])[0].endswith(
        "dataset root does not exist [missing_file]")
    assert failure(capsys, ["train", str(tmp_path / "nope.yaml")]) == [
        f"cvkit train: config file {tmp_path / 'nope.yaml'} does not exist [missing_file]"]
    assert failure(capsys, ["check-data", "--config", str(config), "--set", "data.fromat=coco"]) == [
        "cvkit check-data: --set data.fromat=coco: unknown config key 'data.fromat'; did you mean 'format' or 'root'? "
        "[config]"]


def test_located_blames_the_last_override_that_set_the_key():
    from cvkit.config import located

    exc = ConfigError("train.lr: expected a number, got 'abc'", "train.lr")
    assert str(located(exc, "cfg.yaml")) == "cfg.yaml: train.lr: expected a number, got 'abc'"
    assert str(located(exc, "cfg.yaml", ["data.batch_size=2"])) == "cfg.yaml: train.lr: expected a number, got 'abc'"
    assert str(located(exc, "cfg.yaml", ["train.lr=1", "train.lr=abc"])) == (
        "--set train.lr=abc: expected a number, got 'abc'")
    # an override of the whole section, or of a key below the failing one, set it too
    assert str(located(exc, "cfg.yaml", ["train={lr: abc}"])).startswith("--set train={lr: abc}: train.lr: ")
    nested = ConfigError("train.betas: expected a list", "train.betas")
    assert str(located(nested, "cfg.yaml", ["train.betas.x=1"])).startswith("--set train.betas.x=1: ")
    assert str(located(nested, "cfg.yaml", ["train.beta=1"])).startswith("cfg.yaml: ")
    with pytest.raises(ConfigError, match=r"--set train\.lr\.x=1: 'train\.lr' is a value, not a section"):
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr.x=1"])


def test_kfold_misuse_is_a_usage_error(setup, capsys, tmp_path):
    _, config, _ = setup
    assert failure(capsys, ["train", str(config), "--kfold", "3", "--run-dir", str(tmp_path)]) == [
        "cvkit train: --kfold is for task: classify [usage]"]


# --- infer, export, eval: what they did wrong before --------------------------------------------------------


def test_infer_exits_2_when_nothing_was_processed(setup, capsys, tmp_path):
    root, _, checkpoint = setup
    infer = ["infer", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    assert failure(capsys, [*infer, str(tmp_path / "nope.png")]) == [
        f"cvkit infer: {tmp_path / 'nope.png'}: no such file [missing_file]"]
    assert failure(capsys, [*infer, str(tmp_path / "nope.png"), str(tmp_path / "nope2.png")]) == [
        f"cvkit infer: {tmp_path / 'nope.png'}: no such file (and 1 more inputs) [missing_file]"]
    assert failure(capsys, [*infer, str(tmp_path / "*.jpg")]) == [
        f"cvkit infer: no input images or videos found in {tmp_path / '*.jpg'} [missing_file]",
        "  fix: give image or video files, folders, glob patterns or .txt files listing paths"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert cvkit([*infer, str(broken), str(tmp_path / "nope.png")]) == 2
    captured = capsys.readouterr()
    assert "skipped 2 unreadable images:" in captured.out and "broken.jpg" in captured.out
    assert captured.err.splitlines()[-1] == (
        "cvkit infer: none of the 2 input images could be read (listed above) [unreadable_image]")
    # one readable image is enough: exit 0, the bad ones listed
    assert cvkit([*infer, str(broken), str(root / "images" / "1.png")]) == 0
    assert "1 images -> " in capsys.readouterr().out


def test_export_torchscript_creates_the_output_folder(setup, capsys, tmp_path):
    _, _, checkpoint = setup
    out = tmp_path / "missing" / "folder" / "model.pt"
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and f"wrote {out} (torchscript)" in capsys.readouterr().out


def test_train_help_names_the_real_checkpoint_path(capsys):
    with pytest.raises(SystemExit) as exited:
        cvkit(["train", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--resume runs/default/checkpoints/last.pt" in out and "runs/default/last.pt" not in out


def test_eval_says_how_many_images_it_evaluated_and_which_it_skipped(setup, capsys, tmp_path):
    _, _, checkpoint = setup
    copy = tmp_path / "coco"
    write_coco(copy, IMAGES, ANNS, [{"id": 1, "name": "x"}], name="instances_val.json")
    cut = copy / "images" / "3.png"
    cut.write_bytes(cut.read_bytes()[:100])
    clean = [e for e in IMAGES if e["id"] != 3]
    write_coco(copy, clean, [a for a in ANNS if a["image_id"] != 3], [{"id": 1, "name": "x"}], name="clean.json")
    skip = ["eval", "--checkpoint", str(checkpoint), "--set", f"data.root={copy}", "--set", "data.on_error=skip"]
    assert cvkit([*skip, "--out", str(tmp_path / "skip")]) == 0
    out = capsys.readouterr().out
    assert f"{checkpoint} on val (3 of 4 images evaluated, 1 skipped under data.on_error=skip):" in out
    assert "skipped 1 of 4 images (data.on_error=skip): truncated_image 1\n" \
           f"  {cut.resolve()}: PNG data ends without an IEND chunk [truncated_image]\n" in out
    # the metrics are those of the clean set without that image
    assert cvkit([*skip, "--set", "data.coco_ann_file=clean.json", "--out", str(tmp_path / "clean")]) == 0
    out = capsys.readouterr().out
    assert f"{checkpoint} on val (3 images):" in out and "skipped" not in out
    skipped = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert skipped == json.loads((tmp_path / "clean" / "metrics.json").read_text())


# --- the policy itself: debug tracebacks, real bugs, the formatter ------------------------------------------


def test_cvkit_debug_gives_the_traceback(setup, monkeypatch, capsys, tmp_path):
    argv = ["eval", "--checkpoint", str(tmp_path / "nope.pt")]
    assert failure(capsys, argv) == [f"cvkit eval: checkpoint {tmp_path / 'nope.pt'} does not exist [missing_file]"]
    monkeypatch.setenv("CVKIT_DEBUG", "1")
    with pytest.raises(CheckpointError, match="does not exist"):
        cvkit(argv)
    monkeypatch.setenv("CVKIT_DEBUG", "0")
    assert cvkit(argv) == 2


def test_a_real_bug_keeps_its_traceback(setup, monkeypatch, capsys, tmp_path):
    _, _, checkpoint = setup
    import cvkit.engine.checkpoint as ckpt

    assert failure(capsys, ["export", "--checkpoint", str(tmp_path / "nope.pt")])  # expected: one line, exit 2

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in cvkit")

    monkeypatch.setattr(ckpt, "load_checkpoint", broken)
    with pytest.raises(RuntimeError, match="a bug in cvkit"):
        cvkit(["eval", "--checkpoint", str(checkpoint)])
    monkeypatch.setattr(ckpt, "load_checkpoint", lambda *a, **k: {}["missing"])
    with pytest.raises(KeyError):
        cvkit(["export", "--checkpoint", str(checkpoint)])


def test_format_error_shapes():
    from cvkit.cli import _errors

    assert _errors.format_error("cvkit x", DataError("bad_box", "a.json", "w <= 0", "annotations[0]")) == (
        "cvkit x: a.json: annotations[0]: w <= 0 [bad_box]")  # the DataError's kind is not repeated
    assert _errors.format_error("cvkit x", FileNotFoundError(2, "No such file or directory", "/a/b")) == (
        "cvkit x: /a/b: No such file or directory [missing_file]")
    assert _errors.format_error("cvkit x", ConfigError("line one\n  line two", hint="do\nthis")) == (
        "cvkit x: line one line two [config]\n  fix: do this")  # multi-line messages collapse to one line
    wrapped = RuntimeError(
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(...)\n'
        "cvkit.data.errors.DataError: /d/1.png: not an image [unreadable_image]\n"
    )
    assert _errors.is_expected(wrapped) and not _errors.is_expected(RuntimeError("Caught nothing"))
    assert _errors.format_error("cvkit train", wrapped).splitlines()[0] == (
        "cvkit train: /d/1.png: not an image [unreadable_image]")
    assert not _errors.is_expected(ValueError("a bug")) and not _errors.is_expected(KeyError("a bug"))


# --- the real process: exit status and stderr ---------------------------------------------------------------


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    environ.pop("CVKIT_DEBUG", None) if "CVKIT_DEBUG" not in env else None
    return subprocess.run([sys.executable, "-m", "cvkit.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, env=environ, timeout=300)


def test_subprocess_exit_status_and_stderr(setup, tmp_path):
    _, config, _ = setup
    done = _run(["train", str(config), "--set", "train.lr=abc", "--run-dir", str(tmp_path)])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "cvkit train: --set train.lr=abc: expected a number, got 'abc' [config]\n"
    debug = _run(["train", str(config), "--set", "train.lr=abc", "--run-dir", str(tmp_path)], CVKIT_DEBUG="1")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith("ConfigError: --set train.lr=abc: expected a number, got 'abc'")
