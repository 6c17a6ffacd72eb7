"""Path safety and image decoding rules of cvkit.data.io."""

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from cvkit.data import DataError
from cvkit.data.io import read_image, read_image_size, resolve_root, safe_join

from .helpers import write_image


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "images").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("outside")
    return resolve_root(tmp_path / "root")


@pytest.mark.parametrize(
    "name",
    ["../secret.txt", "images/../../secret.txt", "/etc/passwd", "\\\\server\\share", "C:/Windows/x.jpg",
     "~/x.jpg", "a\x00b.jpg"],
)
def test_safe_join_rejects_names_leaving_the_root(root, name):
    with pytest.raises(DataError) as info:
        safe_join(root, name, source="ann.json", where="images[3]")
    assert info.value.kind == "path_escape"
    assert "ann.json" in str(info.value) and "images[3]" in str(info.value)


def test_safe_join_rejects_symlinks_out_of_the_root(root):
    os.symlink(root.parent / "secret.txt", root / "images" / "link.jpg")
    os.symlink(root.parent, root / "images" / "up")
    for name in ("images/link.jpg", "images/up/secret.txt"):
        with pytest.raises(DataError) as info:
            safe_join(root, name)
        assert info.value.kind == "path_escape"


def test_safe_join_accepts_inside_paths_and_inside_symlinks(root):
    write_image(root / "images" / "a.png", 4, 5)
    os.symlink(root / "images" / "a.png", root / "images" / "b.png")
    assert safe_join(root, "images/a.png") == root / "images" / "a.png"
    assert safe_join(root, "images\\a.png") == root / "images" / "a.png"
    assert safe_join(root, "images/b.png") == root / "images" / "a.png"  # resolved inside the root


def test_safe_join_rejects_non_strings(root):
    for name in (None, 3, "", "   "):
        with pytest.raises(DataError) as info:
            safe_join(root, name)
        assert info.value.kind == "malformed"


def test_resolve_root_requires_a_folder(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_root(tmp_path / "nope")
    assert info.value.kind == "missing_file"


def test_read_image_rgb_order(tmp_path):
    pixels = np.zeros((6, 8, 3), np.uint8)
    pixels[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "red.png")
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_read_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(buf.getvalue())
    out = read_image(path)
    assert out.shape == (40, 20, 3)  # height and width swapped
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now at the top
    assert read_image_size(path) == (40, 20)  # header size agrees with the decoded one, no decode


def test_read_image_greyscale_rgba_and_16_bit(tmp_path):
    grey = (np.arange(30 * 20).reshape(30, 20) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (30, 20, 3) and (out == grey[..., None]).all()

    rgba = np.random.default_rng(0).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba[..., [2, 1, 0, 3]])  # OpenCV writes BGRA
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (10, 12, 3) and (out == rgba[..., :3]).all()  # alpha dropped

    deep = (np.arange(16 * 16).reshape(16, 16) * 250).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and (out[..., 0] == (deep >> 8)).all()


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_images_raise_instead_of_decoding_grey(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    write_image(path, 64, 64, seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert info.value.kind == "truncated_image" and str(path) in str(info.value)


def test_unreadable_missing_and_empty_files(tmp_path):
    (tmp_path / "text.jpg").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    kinds = {}
    for name in ("text.jpg", "empty.png", "missing.jpg"):
        with pytest.raises(DataError) as info:
            read_image(tmp_path / name)
        kinds[name] = info.value.kind
    assert kinds == {"text.jpg": "unreadable_image", "empty.png": "unreadable_image", "missing.jpg": "missing_file"}


def test_read_image_size_matches_decode_for_plain_files(tmp_path):
    for suffix, (h, w) in ((".jpg", (33, 47)), (".png", (21, 8)), (".bmp", (5, 9))):
        write_image(tmp_path / f"x{suffix}", h, w)
        assert read_image_size(tmp_path / f"x{suffix}") == (h, w) == read_image(tmp_path / f"x{suffix}").shape[:2]


def test_data_error_pickles_with_its_fields():
    import pickle

    err = DataError("bad_box", "a.json", "box [1, 2] is bad", "annotations[4]")
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.file, back.where, back.detail, str(back)) == (
        "bad_box", "a.json", "annotations[4]", "box [1, 2] is bad", str(err)
    )
    with pytest.raises(ValueError):
        DataError("not_a_kind", "f", "x")
