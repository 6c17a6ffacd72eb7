"""CLI helpers: distinct infer output names, the checkpoint's interpolation, rank-0 reporting of cvkit train."""

from pathlib import Path

import cv2
import pytest

from cvkit.cli.infer import output_stems
from cvkit.transforms.presets import cv2_interpolation


def test_inputs_sharing_a_stem_get_distinct_output_names():
    paths = [Path("a/x.jpg"), Path("b/x.png"), Path("b/y.jpg"), Path("c/a/x.jpg"), Path("d/a/x.jpg")]
    names = output_stems(paths)
    assert names[Path("b/y.jpg")] == "y"  # a unique stem keeps its plain name
    assert names[Path("a/x.jpg")] == "a_x" and names[Path("b/x.png")] == "b_x"
    assert len(set(names.values())) == len(paths)  # same folder name too: the position decides
    assert names[Path("d/a/x.jpg")] == "a_x_4"


def test_interpolation_names_map_to_opencv_flags():
    assert cv2_interpolation("linear") == cv2.INTER_LINEAR
    assert cv2_interpolation("area") == cv2.INTER_AREA
    with pytest.raises(ValueError, match="bilinear"):
        cv2_interpolation("bilinear")


@pytest.mark.parametrize(("rank", "reports"), [("0", True), ("1", False)])
def test_train_reports_the_result_on_rank_0_only(monkeypatch, capsys, tmp_path, rank, reports):
    from cvkit.cli import train as train_cli

    monkeypatch.setenv("RANK", rank)  # as torchrun sets it
    monkeypatch.setattr(train_cli, "run", lambda cfg, run_dir, resume: [{"epoch": 1.0, "AP": 0.5}])
    assert train_cli.main(["configs/default.yaml", "--run-dir", str(tmp_path)]) == 0
    assert ("done: 1 epochs; last epoch AP=0.5000" in capsys.readouterr().out) == reports
