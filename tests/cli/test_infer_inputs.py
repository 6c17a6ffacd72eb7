"""`cvkit infer` on the inputs people have: a video, a corrupt video, a folder searched recursively, a .txt
list of paths, and nothing readable (exit 2). One untrained 16x16 detector checkpoint serves them all."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvkit.cli.main import main as cvkit
from tests.cli.test_infer_memory import tiny_checkpoint

NUM_FRAMES = 10
FRAME_SIZE = (48, 64)  # (height, width)
FPS = 5.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _frame(i: int) -> np.ndarray:
    """BGR frame ``i``: a white bar moving right on a dark background (distinct frames, easy to encode)."""
    frame = np.full((*FRAME_SIZE, 3), 40, np.uint8)
    frame[:, 6 * i : 6 * i + 6] = 255
    return frame


def _write_video(path: Path, fourcc: str, num_frames: int = NUM_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, FRAME_SIZE[::-1])
    assert writer.isOpened()
    for i in range(num_frames):
        writer.write(_frame(i))
    writer.release()
    return path


def _image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((20, 24, 3), value, np.uint8))
    return path


def _infer(checkpoint: Path, out: Path, *inputs: object) -> int:
    return cvkit(["infer", "--checkpoint", str(checkpoint), *map(str, inputs), "--out", str(out),
                  "--score-thresh", "0.0", "--max-det", "3", "--batch-size", "4", "--draw-thresh", "0.0"])


def _read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_a_video_gives_an_annotated_video_and_one_json_line_per_frame(checkpoint, tmp_path, capsys, one_thread):
    video = _write_video(tmp_path / "clip.mp4", "mp4v")
    assert _infer(checkpoint, tmp_path / "out", video) == 0
    printed = capsys.readouterr().out
    assert f"{NUM_FRAMES} video frames from 1 of 1 videos" in printed
    assert "skipped" not in printed

    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(NUM_FRAMES))
    assert [line["time_s"] for line in lines] == pytest.approx([i / FPS for i in range(NUM_FRAMES)])
    for line in lines:
        assert (line["height"], line["width"]) == FRAME_SIZE
        assert len(line["boxes_xyxy"]) == len(line["scores"]) == len(line["labels"]) == len(line["class_names"]) == 3
        assert all(0 <= b[0] <= b[2] <= FRAME_SIZE[1] and 0 <= b[1] <= b[3] <= FRAME_SIZE[0]
                   for b in line["boxes_xyxy"])

    annotated = tmp_path / "out" / "clip.mp4"
    capture = cv2.VideoCapture(str(annotated))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()
    frames = _read_frames(annotated)
    assert len(frames) == NUM_FRAMES and frames[0].shape == (*FRAME_SIZE, 3)
    originals = _read_frames(video)
    # boxes are drawn (--draw-thresh 0): the annotated frames differ from the input's beyond codec noise
    assert all(np.abs(a.astype(int) - b.astype(int)).max() > 100 for a, b in zip(frames, originals))
    # video frames stay out of the COCO results (no video input, no images: no COCO file written)
    assert not (tmp_path / "out" / "detections_coco.json").exists()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_a_frame_that_fails_to_decode_is_counted_and_the_video_goes_on(checkpoint, tmp_path, capsys, one_thread):
    video = _write_video(tmp_path / "mjpeg.avi", "MJPG")
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]  # each frame is one JPEG
    assert len(starts) == NUM_FRAMES
    data[starts[4] : starts[4] + 200] = bytes(200)  # frame 4: no JPEG data left
    video.write_bytes(bytes(data))

    assert _infer(checkpoint, tmp_path / "out", video, "--no-draw") == 0
    printed = capsys.readouterr().out
    frames = [json.loads(line)["frame"] for line in (tmp_path / "out" / "mjpeg.jsonl").read_text().splitlines()]
    assert 4 not in frames and frames[:4] == [0, 1, 2, 3] and frames[4] == 5  # indices stay stream positions
    lost = NUM_FRAMES - len(frames)
    assert f"skipped {lost} video frames that could not be decoded:\n  {video}: {lost} of {NUM_FRAMES} frames" \
        in printed
    assert "unreadable inputs" not in printed  # the video itself was read
    assert not (tmp_path / "out" / "mjpeg.mp4").exists()  # --no-draw


def test_a_corrupt_video_is_reported_and_skipped(checkpoint, tmp_path, capsys, one_thread):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    image = _image(tmp_path / "still.png")
    assert _infer(checkpoint, tmp_path / "out", corrupt, image) == 0
    printed = capsys.readouterr().out
    assert "1 images ->" in printed and "0 video frames from 0 of 1 videos" in printed
    assert f"skipped 1 unreadable inputs:\n  {corrupt}: not a readable video" in printed
    assert not (tmp_path / "out" / "broken.jsonl").exists() and not (tmp_path / "out" / "broken.mp4").exists()
    assert (tmp_path / "out" / "still.json").exists()


def test_a_folder_is_searched_recursively_and_same_names_keep_distinct_outputs(checkpoint, tmp_path, capsys):
    root = tmp_path / "photos"
    for sub in ("a", "b", "b/deeper"):
        _image(root / sub / "img.jpg")
    _image(root / "top.png")
    (root / "a" / "img.txt").write_text("not a list: a label file inside a folder is ignored\n")
    _write_video(root / "b" / "clip.avi", "MJPG", num_frames=3)
    assert _infer(checkpoint, tmp_path / "out", root) == 0
    printed = capsys.readouterr().out
    assert "4 images ->" in printed and "3 video frames from 1 of 1 videos" in printed and "skipped" not in printed
    files = {json.loads(p.read_text())["file"] for p in (tmp_path / "out").glob("*.json")
             if p.name != "detections_coco.json"}
    assert files == {str(root / "a/img.jpg"), str(root / "b/img.jpg"), str(root / "b/deeper/img.jpg"),
                     str(root / "top.png")}  # one JSON each: none overwrote another
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 4
    assert (tmp_path / "out" / "clip.jsonl").exists()
    coco = json.loads((tmp_path / "out" / "detections_coco.json").read_text())
    assert {d["image_id"] for d in coco} == {0, 1, 2, 3}  # images only: the video's frames are in clip.jsonl


def test_a_list_file_reads_its_paths_and_reports_a_missing_one_by_line(checkpoint, tmp_path, capsys):
    _image(tmp_path / "data" / "one.jpg")
    _image(tmp_path / "data" / "sub" / "two.png")
    elsewhere = _image(tmp_path / "elsewhere" / "three.jpg")
    listing = tmp_path / "data" / "list.txt"
    listing.write_text(f"# images to check\none.jpg\n\n  sub/two.png  \n# sub/commented_out.jpg\n"
                       f"gone.jpg\n{elsewhere}\n")  # line 6 is missing; an absolute path last
    assert _infer(checkpoint, tmp_path / "out", listing) == 0
    printed = capsys.readouterr().out
    assert "3 images ->" in printed
    assert f"skipped 1 unreadable images:\n  {listing}:6: {tmp_path / 'data' / 'gone.jpg'}: no such file" \
        in printed
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.jpg")) == ["one", "three", "two"]


def test_nothing_readable_exits_2(checkpoint, tmp_path, capsys):
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_bytes(b"\xff\xd8\xff not really a jpeg")
    bad_video = tmp_path / "bad.mkv"
    bad_video.write_bytes(b"garbage" * 50)
    assert _infer(checkpoint, tmp_path / "out", bad_image, bad_video) == 2
    captured = capsys.readouterr()
    assert "skipped 2 unreadable inputs:" in captured.out
    assert captured.err.splitlines()[-1] == (
        "cvkit infer: none of the 2 inputs could be read (listed above) [unreadable_image]")

    listing = tmp_path / "only_missing.txt"
    listing.write_text("nope.jpg\n# comment\nnope.mp4\n")
    assert _infer(checkpoint, tmp_path / "out2", listing) == 2
    err = capsys.readouterr().err  # stops before loading the model: nothing to read
    assert err.startswith(f"cvkit infer: no input exists: {listing}:1: {tmp_path / 'nope.jpg'}: no such file "
                          "(and 1 more listed files) [missing_file]")


def test_collect_inputs_rules(tmp_path):
    """Folders and ``**`` globs reach every depth; a list names files only; each file is read once."""
    from cvkit.cli._inputs import collect_inputs, expand_inputs

    deep = _image(tmp_path / "d" / "x" / "y" / "deep.jpg")
    top = _image(tmp_path / "d" / "top.jpg")
    (tmp_path / "d" / "clip.webm").write_bytes(b"")  # by its suffix: a video (reading it is later)
    (tmp_path / "d" / "labels.txt").write_text("top.jpg\n")
    listing = tmp_path / "list.txt"
    listing.write_text("d/top.jpg\nd/x\n#d/x/y/deep.jpg\n")

    found = collect_inputs([str(tmp_path / "d"), str(listing)])
    assert found.images == [top, deep] and found.videos == [tmp_path / "d" / "clip.webm"]  # sorted by path
    assert found.skipped == [(f"{listing}:2", f"{tmp_path / 'd' / 'x'}: is a folder")]  # top.jpg: seen already
    globbed = collect_inputs([str(tmp_path / "d" / "**" / "*")])
    assert deep in globbed.files and tmp_path / "d" / "labels.txt" in globbed.files  # a glob's .txt: a file
    assert collect_inputs([str(tmp_path / "d" / "*.jpg")]).files == [top]  # no ** : one level
    # the classification path: images only from folders, lists expanded, missing entries kept (reported on read)
    listing.write_text("d/top.jpg\nmissing.jpg\n")
    assert expand_inputs([str(tmp_path / "d"), str(listing)]) == [top, deep, tmp_path / "missing.jpg"]


def test_a_video_inside_the_output_folder_is_not_overwritten(checkpoint, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    video = _write_video(tmp_path / "out" / "clip.mp4", "mp4v", num_frames=2)
    before = video.read_bytes()
    assert _infer(checkpoint, tmp_path / "out", video) == 2  # its only input skipped: nothing read
    assert f"{video}: its annotated video would overwrite it (choose another --out)" in capsys.readouterr().out
    assert video.read_bytes() == before
    assert _infer(checkpoint, tmp_path / "out", video, "--no-draw") == 0  # only clip.jsonl to write
    assert len((tmp_path / "out" / "clip.jsonl").read_text().splitlines()) == 2
