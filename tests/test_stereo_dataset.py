"""`StereoPairDataset`: pairs on the fly, feed-size crops, augmentation only when training,
per-sample generators (DataLoader workers never share noise)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stereo.augment import ColourJitter, augment_pair, augment_right
from stereo.dataset import StereoPairDataset


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    images, depth = tmp_path / "images", tmp_path / "depth"
    images.mkdir()
    depth.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 120, 3)).astype(np.uint8)).save(images / f"p{i}.png")
        inv = np.ones((40, 120), np.float32)
        inv[:, 60:] = 3.0
        np.save(depth / f"p{i}.npy", inv)
    # one identical photo under two names: only the per-sample generator can tell them apart
    Image.open(images / "p0.png").save(images / "twin.png")
    np.save(depth / "twin.npy", np.load(depth / "p0.npy"))
    return images, depth


def test_items_are_tensors_of_the_feed_size(folder):
    images, depth = folder
    ds = StereoPairDataset(images, depth, feed_size=(32, 48), training=True, seed=1)
    item = ds[0]
    assert item["left"].shape == item["right"].shape == (3, 32, 48)
    assert item["left"].dtype == torch.float32 and 0 <= item["left"].min() and item["left"].max() <= 1
    assert item["disparity"].shape == (1, 32, 48) and item["disparity"].dtype == torch.float32
    assert item["visible"].shape == item["holes"].shape == (32, 48) and item["visible"].dtype == torch.bool
    assert 50 <= item["scale"] < 1.15 * 192
    again = ds[0]
    assert torch.equal(item["right"], again["right"]) and item["seed"] == again["seed"]
    ds.set_epoch(1)
    assert ds[0]["seed"] != item["seed"]


def test_augmentation_only_when_training(folder):
    images, depth = folder
    plain = StereoPairDataset(images, depth, feed_size=(32, 48), training=False, seed=1)
    item = plain[1]
    # no augmentation: the left view is exactly the (centre-cropped) photo, in [0, 1] steps of 1/255
    assert torch.equal(item["left"] * 255, torch.round(item["left"] * 255))
    assert torch.equal(item["right"] * 255, torch.round(item["right"] * 255))
    plain.set_epoch(5)
    assert torch.equal(plain[1]["right"], item["right"])  # validation items do not change
    noisy = StereoPairDataset(images, depth, feed_size=(32, 48), training=True, seed=1)
    right = noisy[1]["right"]
    assert not torch.equal(right * 255, torch.round(right * 255))


def test_two_workers_differ_and_reproduce(folder):
    images, depth = folder
    ds = StereoPairDataset(images, depth, feed_size=(32, 48), training=True, seed=2)
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    first = list(loader)
    second = list(DataLoader(ds, batch_size=1, num_workers=2, shuffle=False))
    assert [b["stem"][0] for b in first] == ["p0", "p1", "p2", "p3", "twin"]
    for a, b in zip(first, second):
        assert torch.equal(a["right"], b["right"]) and torch.equal(a["disparity"], b["disparity"])
    seeds = [int(b["seed"]) for b in first]
    assert len(set(seeds)) == len(seeds)
    # p0 and twin are the same photo, handled by different workers: different scale and noise
    p0, twin = first[0], first[4]
    assert p0["scale"].item() != twin["scale"].item()
    assert not torch.equal(p0["right"], twin["right"])
    single = [ds[i] for i in range(len(ds))]
    for a, b in zip(first, single):
        assert torch.equal(a["right"][0], b["right"])  # workers change nothing


def test_augment_functions():
    rng = np.random.default_rng(3)
    img = rng.random((16, 20, 3)).astype(np.float32)
    out = augment_right(img, np.random.default_rng(4))
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, augment_right(img, np.random.default_rng(4)))
    left, right = augment_pair(img, img, np.random.default_rng(5))
    assert left.shape == right.shape == img.shape
    identity = ColourJitter(1.0, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(identity(img), img, atol=1e-6)
    grey = np.full((2, 2, 3), 0.5, np.float32)
    np.testing.assert_allclose(ColourJitter(1.0, 1.0, 1.0, 0.01)(grey), grey, atol=1e-6)  # hue of grey
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 1.0
    shifted = ColourJitter(1.0, 1.0, 1.0, 1 / 3)(red)  # a third of the circle: red -> green
    np.testing.assert_allclose(shifted[0, 0], [0, 1, 0], atol=1e-6)
