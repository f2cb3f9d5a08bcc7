"""Every dataset format parsed from small generated fixtures (no network), real MNIST when present, the
streaming loader, and the bad-input cases of folders of images."""

import gzip
import hashlib
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from cnnlab.data import load_dataset, sources
from cnnlab.data.binary import parse_idx, parse_norb_matrix
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.data.streaming import StreamingLoader
from cnnlab.errors import DataError, UnknownNameError
from conftest import SHARED_DATASETS, idx_bytes


def _write_mnist(folder, n_train=12, n_test=6, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_idx_parser_round_trip_and_errors():
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    assert torch.equal(parse_idx(idx_bytes(array)), torch.from_numpy(array))
    with pytest.raises(DataError, match="not an idx file"):
        parse_idx(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(idx_bytes(array)[:-4])


def test_mnist_from_uncompressed_files(tmp_path):
    arrays = _write_mnist(tmp_path / "MNIST" / "raw")
    data = load_dataset("mnist", tmp_path)
    assert data.image_shape == (1, 28, 28) and len(data.train) == 12 and len(data.test) == 6
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert data.fit_mode == "pad"


def test_mnist_gz_is_checked_against_its_md5(tmp_path, monkeypatch):
    folder = tmp_path / "MNIST" / "raw"
    _write_mnist(folder, gz=True)
    sums = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())]
    monkeypatch.setattr(tvd.MNIST, "resources", sums)
    assert len(load_dataset("mnist", tmp_path).train) == 12
    monkeypatch.setattr(tvd.MNIST, "resources", [(n, "0" * 32) for n, _ in sums])
    with pytest.raises(DataError, match="does not match its published md5"):
        load_dataset("mnist", tmp_path)


def test_missing_files_say_which_and_where(tmp_path):
    with pytest.raises(DataError, match=r"(?s)KMNIST/raw.*train-images-idx3-ubyte.gz.*cnnlab data get kmnist"):
        load_dataset("kmnist", tmp_path)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"imagenet/train/<wnid>"):
        load_dataset("imagenet", tmp_path)


def test_cifar10_and_100_via_torchvision(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)  # fixture files: md5s differ
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_dataset("cifar10", tmp_path)
    assert data.image_shape == (3, 32, 32) and len(data.train) == 20 and len(data.test) == 4
    first = np.frombuffer(pickle.loads((base / "data_batch_1").read_bytes())["data"][0].tobytes(), np.uint8).copy()
    assert torch.equal(data.train.images[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert data.classes[0] == "c0"


def test_svhn_via_torchvision(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        labels = np.array([[10], [1], [2], [3], [4], [5]][:n], dtype=np.uint8)  # SVHN stores digit 0 as 10
        scipy_io.savemat(
            folder / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": labels}
        )
    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)
    data = load_dataset("svhn", tmp_path)
    assert data.image_shape == (3, 32, 32) and data.train.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_stl10_via_torchvision(tmp_path, monkeypatch):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        (folder / f"{split}_y.bin").write_bytes(np.array([1, 2, 3, 10][:n], dtype=np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    data = load_dataset("stl10", tmp_path)
    assert data.image_shape == (3, 96, 96) and data.train.labels.tolist() == [0, 1, 2, 9]


def _norb_bytes(array: np.ndarray) -> bytes:
    magic = {np.uint8: 0x1E3D4C55, np.int32: 0x1E3D4C54}[array.dtype.type]
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    return (
        struct.pack("<ii", magic, array.ndim)
        + struct.pack(f"<{len(dims)}i", *dims)
        + array.astype(array.dtype.newbyteorder("<")).tobytes()
    )


def test_norb_binary_matrix_parser():
    images = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    assert torch.equal(parse_norb_matrix(_norb_bytes(images)), torch.from_numpy(images))
    labels = np.array([4, 0, 2], dtype=np.int32)  # ndim 1: the format still stores three sizes
    assert parse_norb_matrix(_norb_bytes(labels)).tolist() == [4, 0, 2]
    with pytest.raises(DataError, match="not a NORB binary matrix"):
        parse_norb_matrix(b"\x00" * 16)


def test_smallnorb_loads_the_left_camera(tmp_path, monkeypatch):
    folder = tmp_path / "smallnorb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    table = {}
    names = list(sources.NORB_FILES)
    for dat, cat in ((names[0], names[1]), (names[2], names[3])):
        pairs = rng.integers(0, 256, (5, 2, 96, 96), dtype=np.uint8)
        for name, array in ((dat, pairs), (cat, np.arange(5, dtype=np.int32))):
            payload = gzip.compress(_norb_bytes(array))
            (folder / f"{name}.gz").write_bytes(payload)
            table[name] = (hashlib.md5(payload).hexdigest(), "unused")
        if dat == names[0]:
            left = pairs[:, 0]
    monkeypatch.setattr(sources, "NORB_FILES", table)
    data = load_dataset("smallnorb", tmp_path)
    assert data.image_shape == (1, 96, 96) and data.classes[2] == "airplane"
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(left))


def _photo_tree(root, classes=("cat", "dog"), per_class=5, size=(40, 30)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = (200 * c, 50 + 20 * i, 100)
            Image.new("RGB", size, colour).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def _caltech_tree(root, name, categories, per_class):
    """The extracted archives' layout as torchvision's Caltech101/Caltech256 read it (files numbered from 1)."""
    folder = root / name / ("101_ObjectCategories" if name == "caltech101" else "256_ObjectCategories")
    for c, category in enumerate(categories):
        (folder / category).mkdir(parents=True)
        for i in range(1, per_class + 1):
            file = f"image_{i:04d}.jpg" if name == "caltech101" else f"{c + 1:03d}_{i:04d}.jpg"
            Image.new("RGB", (30 + i, 20), (40 * c, 10 * i, 90)).save(folder / category / file)
    return folder


@pytest.mark.parametrize("name", ["caltech101", "caltech256"])
def test_caltech_archives_load_through_torchvision_and_split(tmp_path, name):
    categories = ["BACKGROUND_Google", "Faces", "ant", "brain"] if name == "caltech101" else ["001.ak47", "002.bat"]
    folder = _caltech_tree(tmp_path, name, categories, per_class=5)
    data = load_dataset(name, tmp_path)
    expected = categories[1:] if name == "caltech101" else categories  # torchvision drops the background class
    assert data.streaming and data.classes == expected and data.image_shape[0] == 3
    assert len(data.train) + len(data.test) == 5 * len(expected) and len(data.test) == len(expected)  # 20%
    assert set(data.test.labels.tolist()) == set(range(len(expected)))  # stratified
    for path, label in zip(
        data.train.paths + data.test.paths, torch.cat([data.train.labels, data.test.labels]), strict=True
    ):
        assert Path(path).is_file() and Path(path).parent == folder / expected[int(label)]
    assert load_dataset(name, tmp_path).test.paths == data.test.paths  # the split is seeded
    pre = Preprocessing(3, (24, 24), 0, (0.5,) * 3, (0.25,) * 3)
    images, labels = next(iter(StreamingLoader(data.train.paths, data.train.labels, pre, 4, num_workers=0)))
    assert images.shape == (4, 3, 24, 24) and labels.shape == (4,)


def test_missing_caltech_says_where_the_files_go(tmp_path):
    with pytest.raises(DataError, match=r"(?s)caltech256.*256_ObjectCategories"):
        load_dataset("caltech256", tmp_path)


def test_folder_dataset_split_and_modes(tmp_path):
    _photo_tree(tmp_path / "photos")
    Image.new("L", (20, 20), 9).save(tmp_path / "photos" / "cat" / "grey.png")
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(tmp_path / "photos" / "dog" / "alpha.png")
    data = load_dataset(f"folder:{tmp_path / 'photos'}", val_split=0.4)
    assert data.streaming and data.classes == ["cat", "dog"]
    assert len(data.train) + len(data.test) == 12 and len(data.test) == 4
    assert set(data.test.labels.tolist()) == {0, 1}  # stratified


def test_folder_with_train_and_val(tmp_path):
    _photo_tree(tmp_path / "p" / "train")
    _photo_tree(tmp_path / "p" / "val", per_class=2)
    data = load_dataset(f"folder:{tmp_path / 'p'}")
    assert (len(data.train), len(data.test)) == (10, 4)


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")
    _photo_tree(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="only one class"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    _photo_tree(tmp_path / "hole")
    (tmp_path / "hole" / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(f"folder:{tmp_path / 'hole'}")
    with pytest.raises(UnknownNameError, match="folder:PATH"):
        load_dataset("folders")


def test_streaming_loader_decodes_skips_and_is_strict(tmp_path):
    _photo_tree(tmp_path / "p")
    (tmp_path / "p" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    data = load_dataset(f"folder:{tmp_path / 'p'}", val_split=0.1)
    paths = data.train.paths + data.test.paths
    labels = torch.cat([data.train.labels, data.test.labels])
    pre = Preprocessing(3, (37, 37), 0, (0.5,) * 3, (0.25,) * 3, keep_aspect=True, crop=(32, 32))
    loader = StreamingLoader(paths, labels, pre, 4, num_workers=0)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\):\s+.*broken.jpg"):
        batches = list(loader.batches())
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.float32  # 11 files, 1 skipped
    strict = StreamingLoader(paths, labels, pre, 4, num_workers=0, strict=True)
    with pytest.raises(DataError, match="broken.jpg"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(strict.batches())


def test_training_on_a_folder_of_photos(tmp_path, cli):
    _photo_tree(tmp_path / "p", per_class=8)
    code, out, err = cli(
        "train",
        "--model",
        "lenet5-modern",
        "--data",
        f"folder:{tmp_path / 'p'}",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    assert "final test error" in out
    code, out, _ = cli("eval", tmp_path / "run", "--device", "cpu", "--tta", "10crop")
    assert code == 0 and "10crop" in out


@pytest.mark.skipif(not (SHARED_DATASETS / "MNIST" / "raw").is_dir(), reason="real MNIST not in ../shared/datasets")
def test_real_mnist_and_fashion_mnist_read_in_place():
    before = sorted(p.name for p in (SHARED_DATASETS / "MNIST" / "raw").iterdir())
    mnist = load_dataset("mnist", SHARED_DATASETS)
    assert (len(mnist.train), len(mnist.test)) == (60_000, 10_000)
    assert torch.bincount(mnist.test.labels).tolist()[:2] == [980, 1135]  # the published test-set class counts
    assert abs(mnist.train.images.float().mean().item() / 255 - 0.1307) < 1e-3
    fashion = load_dataset("fashion-mnist", SHARED_DATASETS)
    assert fashion.classes[0] == "T-shirt/top" and torch.bincount(fashion.train.labels).tolist() == [6000] * 10
    assert sorted(p.name for p in (SHARED_DATASETS / "MNIST" / "raw").iterdir()) == before  # nothing written


def test_streaming_loader_drops_the_last_partial_batch_when_asked(tmp_path):
    _photo_tree(tmp_path / "p")  # 10 photos
    data = load_dataset(f"folder:{tmp_path / 'p'}", val_split=0.1)
    paths, labels = data.train.paths + data.test.paths, torch.cat([data.train.labels, data.test.labels])
    pre = Preprocessing(3, (16, 16), 0, (0.5,) * 3, (0.25,) * 3)
    kept = StreamingLoader(paths, labels, pre, 4, num_workers=0, shuffle=True)
    dropped = StreamingLoader(paths, labels, pre, 4, num_workers=0, shuffle=True, drop_last=True)
    assert (len(kept), len(dropped)) == (3, 2)
    assert [len(y) for _, y in kept.batches(1)] == [4, 4, 2]
    assert [len(y) for _, y in dropped.batches(1)] == [4, 4]
    first = torch.cat([y for _, y in dropped.batches(1)])
    assert torch.equal(first, torch.cat([y for _, y in kept.batches(1)])[:8])  # same order, the tail cut
