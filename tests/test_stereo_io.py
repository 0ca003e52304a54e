"""File formats of `stereo`: PFM, KITTI 16-bit PNG, photo loading, depth maps, previews."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from transformers import DepthAnythingConfig, DPTConfig, ZoeDepthConfig

from stereo.depth_sources import (
    DepthDir,
    MissingDepth,
    UnreadableDepth,
    load_depth_map,
    model_output_kind,
    to_inverse_depth,
)
from stereo.images import UnreadableImage, load_rgb
from stereo.kitti_png import decode_disparity_png, encode_disparity_png, read_disparity_png, write_disparity_png
from stereo.pfm import PFMError, read_pfm, write_pfm
from stereo.preview import disparity_preview


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3), (1, 1)])
def test_pfm_round_trip_both_endiannesses(tmp_path, little_endian, shape):
    a = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    a.flat[0] = np.inf
    path = tmp_path / "x.pfm"
    write_pfm(path, a, little_endian=little_endian)
    header = path.read_bytes()[:20]
    assert (b"-1.0" in header) == little_endian
    np.testing.assert_array_equal(read_pfm(path), a)


def test_pfm_reads_files_written_by_other_tools():
    """Rows bottom to top, big-endian, a scale other than 1 and a comment line."""
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=">f4")  # bottom row first
    data = b"Pf\n# made elsewhere\n3 2\n2.5\n" + values.tobytes()
    np.testing.assert_array_equal(read_pfm(io.BytesIO(data)), [[4, 5, 6], [1, 2, 3]])


def test_pfm_rejects_bad_files(tmp_path):
    with pytest.raises(PFMError, match="not a PFM"):
        read_pfm(io.BytesIO(b"P6\n1 1\n255\n\x00\x00\x00"))
    with pytest.raises(PFMError, match="truncated"):
        read_pfm(io.BytesIO(b"Pf\n4 4\n-1.0\n" + b"\x00" * 12))


def test_kitti_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 250, (9, 13)).astype(np.float32)
    d[0, 0] = 0.0  # valid zero: stored as 1/256, not as invalid
    d[0, 1] = np.nan  # invalid
    path = tmp_path / "d.png"
    write_disparity_png(path, d)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16") and np.array(im).dtype == np.uint16
    back, valid = read_disparity_png(path)
    assert not valid[0, 1] and valid.sum() == d.size - 1
    ok = valid & np.isfinite(d)
    assert np.abs(back[ok] - d[ok]).max() <= 1 / 256
    code = encode_disparity_png(np.array([[1.5, 300.0]]))
    np.testing.assert_array_equal(code, [[384, 65535]])
    np.testing.assert_array_equal(decode_disparity_png(code)[0], [[1.5, 65535 / 256]])


def _png16_rgb(array):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_load_rgb_handles_modes(tmp_path):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (6, 9)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = load_rgb(tmp_path / "grey.png")
    assert out.shape == (6, 9, 3) and out.dtype == np.uint8 and (out == grey[..., None]).all()

    rgba = rng.integers(0, 256, (6, 9, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent: white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load_rgb(tmp_path / "rgba.png")
    assert out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1:], rgba[1:, :, :3])

    grey16 = (rng.integers(0, 65536, (6, 9))).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    out = load_rgb(tmp_path / "grey16.png")
    np.testing.assert_array_equal(out[..., 0], np.rint(grey16 / 257.0).astype(np.uint8))

    rgb16 = rng.integers(0, 65536, (5, 4, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16_rgb(rgb16))
    out = load_rgb(tmp_path / "rgb16.png")
    assert out.shape == (5, 4, 3) and np.abs(out.astype(int) - rgb16 / 257.0).max() <= 1.0

    Image.fromarray(grey).convert("P").save(tmp_path / "palette.gif")
    assert load_rgb(tmp_path / "palette.gif").shape == (6, 9, 3)


def test_load_rgb_applies_exif_orientation(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = 255  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the left edge is now the top


def test_load_rgb_reports_bad_files(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(UnreadableImage, match="not a recognised image format"):
        load_rgb(tmp_path / "junk.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(UnreadableImage):
        load_rgb(tmp_path / "cut.png")


def test_depth_maps_npy_pfm_png16(tmp_path):
    rng = np.random.default_rng(3)
    inv = rng.uniform(0.1, 5, (6, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", inv[None])  # 1 x H x W is squeezed
    write_pfm(tmp_path / "b.pfm", inv)
    Image.fromarray((inv * 1000).astype(np.uint16)).save(tmp_path / "c.png")
    np.testing.assert_array_equal(load_depth_map(tmp_path / "a.npy"), inv)
    np.testing.assert_array_equal(load_depth_map(tmp_path / "b.pfm"), inv)
    np.testing.assert_array_equal(load_depth_map(tmp_path / "c.png"), (inv * 1000).astype(np.uint16))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UnreadableDepth, match="grayscale"):
        load_depth_map(tmp_path / "rgb.png")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(UnreadableDepth):
        load_depth_map(tmp_path / "bad.npy")


def test_depth_dir_kinds_and_resizing(tmp_path):
    depth = np.array([[1.0, 2.0], [4.0, 0.0]], dtype=np.float32)  # metres; 0 = no measurement
    np.save(tmp_path / "x.npy", depth)
    image = np.zeros((2, 2, 3), np.uint8)
    np.testing.assert_allclose(DepthDir(tmp_path, kind="depth")("x", image), [[1.0, 0.5], [0.25, 0.0]])
    np.testing.assert_array_equal(DepthDir(tmp_path, kind="inverse")("x", image), depth)
    assert DepthDir(tmp_path)("x", np.zeros((6, 4, 3), np.uint8)).shape == (6, 4)
    with pytest.raises(MissingDepth, match="y.npy"):
        DepthDir(tmp_path)("y", image)
    np.testing.assert_array_equal(to_inverse_depth([[np.inf, -1.0]], "depth"), [[0.0, 0.0]])


def test_model_output_kind_from_config():
    assert model_output_kind(DPTConfig()) == "inverse"
    assert model_output_kind(DepthAnythingConfig()) == "inverse"
    assert model_output_kind(DepthAnythingConfig(depth_estimation_type="metric")) == "depth"
    assert model_output_kind(ZoeDepthConfig()) == "depth"

    class Unknown:
        model_type = "something_new"

    assert model_output_kind(Unknown()) is None


def test_disparity_preview_colours():
    d = np.tile(np.linspace(0, 100, 11), (3, 1))
    d[0, 0] = np.nan
    out = disparity_preview(d)
    assert out.shape == (3, 11, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    far, near = out[1, 0].astype(int), out[1, -1].astype(int)
    assert far[2] > far[0] and near[0] > near[2]  # far is blue, near is warm
    assert len({tuple(c) for c in out[1]}) == 11
