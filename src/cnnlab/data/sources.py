"""Every dataset of the seeds, registered by name. torchvision's dataset code does the downloading, checksums
and parsing wherever it has them; MNIST-style .gz files are read in place so read-only roots work.

In-memory datasets (MNIST-like, CIFAR, SVHN, STL-10, smallNORB) load as uint8 tensors; photo collections
(Caltech, ImageNet, your own folders) load as lists of files that the streaming loader decodes on workers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.data.binary import parse_idx, parse_norb_matrix
from cnnlab.data.datasets import FileImageSet, ImageDataset, ImageSet, register_dataset, register_prefix_loader
from cnnlab.data.files import download, locate, md5sum, missing_files, read_bytes
from cnnlab.errors import DataError

# ---- MNIST family: idx files, read from .gz in place ---------------------------------------------------------
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _mnist_like(name: str, tv_class_name: str, classes: list[str] | None, root: Path, fetch: bool) -> ImageDataset:
    import torchvision.datasets as tvd

    tv_class = getattr(tvd, tv_class_name)
    folder = root / tv_class_name / "raw"  # torchvision's layout: <root>/<Name>/raw/<file>
    checksums = dict(tv_class.resources)
    urls = [m + f for m in tv_class.mirrors for f in _IDX_FILES[:1]]
    if fetch:
        download(lambda: tv_class(str(root), train=True, download=True), name, f"Place the files in {folder}.")
    found = {f: locate(folder, f) for f in _IDX_FILES}
    absent = [f for f, p in found.items() if p is None]
    if absent:
        raise missing_files(name, folder, absent, [m.rstrip("/") for m in tv_class.mirrors] or urls)
    for file, path in found.items():
        if path.suffix == ".gz" and md5sum(path) != checksums[file]:
            raise DataError(
                f"{path} does not match its published md5 {checksums[file]}: it is damaged or another "
                f"file. Delete it and run `cnnlab data get {name}`."
            )
    tensors = {f: parse_idx(read_bytes(p), str(p)) for f, p in found.items()}
    train = ImageSet(tensors[_IDX_FILES[0]].unsqueeze(1).contiguous(), tensors[_IDX_FILES[1]].long())
    test = ImageSet(tensors[_IDX_FILES[2]].unsqueeze(1).contiguous(), tensors[_IDX_FILES[3]].long())
    return ImageDataset(name, train, test, classes or [str(i) for i in range(10)], fit_mode="pad", source=str(folder))


@register_dataset(
    "mnist", "LeCun et al.'s handwritten digits: 60,000 train / 10,000 test, 28×28 grey", augment="lenet-distortions"
)
def _mnist(root: Path, fetch: bool = False) -> ImageDataset:
    return _mnist_like("mnist", "MNIST", None, root, fetch)


@register_dataset(
    "fashion-mnist", "Zalando's clothing images: 60,000 / 10,000, 28×28 grey, 10 classes", augment="pad-crop-flip"
)
def _fashion(root: Path, fetch: bool = False) -> ImageDataset:
    import torchvision.datasets as tvd

    return _mnist_like("fashion-mnist", "FashionMNIST", list(tvd.FashionMNIST.classes), root, fetch)


@register_dataset(
    "kmnist", "Kuzushiji-MNIST, cursive Japanese characters: 60,000 / 10,000, 28×28 grey", augment="pad-crop"
)
def _kmnist(root: Path, fetch: bool = False) -> ImageDataset:
    import torchvision.datasets as tvd

    return _mnist_like("kmnist", "KMNIST", list(tvd.KMNIST.classes), root, fetch)


# ---- torchvision's in-memory sets --------------------------------------------------------------------------
def _torchvision_set(name: str, build, root: Path, fetch: bool, files: list[str], url: str):
    """Instantiate torchvision dataset objects (they verify md5s), with our errors for missing files."""
    if fetch:
        download(lambda: build(True), name, f"Download {url} and place it in {root}.")
    try:
        return build(False)
    except RuntimeError:
        raise missing_files(name, root, files, [url]) from None
    except ImportError as error:
        raise DataError(f"Reading {name!r} needs the package {error.name!r}: pip install {error.name}.") from None


def _cifar(name: str, tv_name: str, root: Path, fetch: bool) -> ImageDataset:
    import torchvision.datasets as tvd

    tv_class = getattr(tvd, tv_name)

    def build(download_now: bool):
        return [tv_class(str(root), train=t, download=download_now and t) for t in (True, False)]

    train, test = _torchvision_set(
        name,
        build,
        root,
        fetch,
        [tv_class.filename + " (or its extracted " + tv_class.base_folder + "/)"],
        tv_class.url,
    )

    def split(ds) -> ImageSet:
        return ImageSet(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets))

    return ImageDataset(name, split(train), split(test), list(train.classes), source=str(root / tv_class.base_folder))


@register_dataset("cifar10", "CIFAR-10: 50,000 / 10,000 colour images, 32×32, 10 classes", augment="pad-crop-flip")
def _cifar10(root: Path, fetch: bool = False) -> ImageDataset:
    return _cifar("cifar10", "CIFAR10", root, fetch)


@register_dataset("cifar100", "CIFAR-100: 50,000 / 10,000 colour images, 32×32, 100 classes", augment="pad-crop-flip")
def _cifar100(root: Path, fetch: bool = False) -> ImageDataset:
    return _cifar("cifar100", "CIFAR100", root, fetch)


@register_dataset("svhn", "Street View House Numbers: 73,257 / 26,032 colour digits, 32×32", augment="pad-crop")
def _svhn(root: Path, fetch: bool = False) -> ImageDataset:
    import torchvision.datasets as tvd

    folder = root / "svhn"

    def build(download_now: bool):
        return [tvd.SVHN(str(folder), split=s, download=download_now) for s in ("train", "test")]

    urls = [tvd.SVHN.split_list[s][0] for s in ("train", "test")]
    train, test = _torchvision_set(
        "svhn", build, folder, fetch, ["train_32x32.mat", "test_32x32.mat"], " and ".join(urls)
    )

    def split(ds) -> ImageSet:
        return ImageSet(torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long())

    return ImageDataset("svhn", split(train), split(test), [str(i) for i in range(10)], source=str(folder))


@register_dataset(
    "stl10", "STL-10 labelled split: 5,000 / 8,000 colour images, 96×96, 10 classes", augment="pad-crop-flip"
)
def _stl10(root: Path, fetch: bool = False) -> ImageDataset:
    import torchvision.datasets as tvd

    def build(download_now: bool):
        return [tvd.STL10(str(root), split=s, download=download_now and s == "train") for s in ("train", "test")]

    train, test = _torchvision_set(
        "stl10", build, root, fetch, ["stl10_binary.tar.gz (or its extracted stl10_binary/)"], tvd.STL10.url
    )

    def split(ds) -> ImageSet:
        return ImageSet(torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long())

    return ImageDataset("stl10", split(train), split(test), list(train.classes), source=str(root / "stl10_binary"))


# ---- smallNORB: our own parser (torchvision has none) -------------------------------------------------------
NORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
NORB_FILES = {  # name: (md5 of the .gz as published, md5 of the uncompressed file)
    "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat": (
        "66054832f9accfe74a0f4c36a75bc0a2",
        "8138a0902307b32dfa0025a36dfa45ec",
    ),
    "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat": (
        "23c8b86101fbf0904a000b43d3ed2fd9",
        "fd5120d3f770ad57ebe620eb61a0b633",
    ),
    "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat": (
        "e4ad715691ed5a3a5f138751a4ceb071",
        "e9920b7f7b2869a8f1a12e945b2c166c",
    ),
    "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat": (
        "5aa791cd7e6016cf957ce9bdb93b8603",
        "fd5120d3f770ad57ebe620eb61a0b633",
    ),
}
NORB_CLASSES = ["animal", "human", "airplane", "truck", "car"]


def fetch_smallnorb(folder: Path) -> None:
    """Download the four smallNORB .gz files with torchvision's checksummed downloader."""
    from torchvision.datasets.utils import download_url

    for name, (gz_md5, _) in NORB_FILES.items():
        download_url(NORB_URL + name + ".gz", str(folder), name + ".gz", gz_md5)


@register_dataset(
    "smallnorb",
    "small NORB toys (LeCun et al. 2004): 24,300 / 24,300 stereo pairs, 96×96 grey, 5 classes; left camera",
    augment="pad-crop",
)
def _smallnorb(root: Path, fetch: bool = False) -> ImageDataset:
    folder = root / "smallnorb"
    if fetch:
        download(lambda: fetch_smallnorb(folder), "smallnorb", f"Download the files from {NORB_URL} into {folder}.")
    found = {n: locate(folder, n + ".gz") for n in NORB_FILES}
    absent = [n + ".gz" for n, p in found.items() if p is None]
    if absent:
        raise missing_files("smallnorb", folder, absent, [NORB_URL])
    for name, path in found.items():
        expected = NORB_FILES[name][0] if path.suffix == ".gz" else NORB_FILES[name][1]
        if md5sum(path) != expected:
            raise DataError(f"{path} does not match its published md5 {expected}: delete it and fetch it again.")
    parsed = {n: parse_norb_matrix(read_bytes(p), str(p)) for n, p in found.items()}
    names = list(NORB_FILES)

    def split(dat: str, cat: str) -> ImageSet:
        images = parsed[dat]  # (24300, 2, 96, 96) uint8: the two cameras of a stereo pair
        return ImageSet(images[:, :1].contiguous(), parsed[cat].long())  # the left camera, as a grey image

    return ImageDataset(
        "smallnorb", split(names[0], names[1]), split(names[2], names[3]), NORB_CLASSES, source=str(folder)
    )


# ---- photo collections: streamed from files ------------------------------------------------------------------
def split_files(
    paths: list[str], labels: list[int], val_split: float, seed: int = 0
) -> tuple[FileImageSet, FileImageSet]:
    """A seeded split stratified by class (every class keeps ≥ 1 file on each side when it has ≥ 2)."""
    if not 0 < val_split < 1:
        raise DataError(f"--val-split must be a fraction in (0, 1), got {val_split}.")
    generator = torch.Generator().manual_seed(seed)
    label_tensor = torch.tensor(labels)
    train_idx, test_idx = [], []
    for c in label_tensor.unique().tolist():
        members = (label_tensor == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = min(max(1, round(len(members) * val_split)), len(members) - 1) if len(members) > 1 else 0
        test_idx += members[:n_test].tolist()
        train_idx += members[n_test:].tolist()

    def subset(indices: list[int]) -> FileImageSet:
        indices = sorted(indices)
        return FileImageSet([paths[i] for i in indices], label_tensor[indices].long())

    return subset(train_idx), subset(test_idx)


def scan_folder(directory: Path, dataset: str) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class names) of a class-per-sub-folder tree, with torchvision's ImageFolder rules."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not directory.is_dir():
        raise DataError(f"{dataset}: folder {directory} does not exist. Give a folder with one sub-folder per class.")
    try:
        classes, class_to_idx = find_classes(str(directory))
    except FileNotFoundError:
        raise DataError(
            f"{dataset}: {directory} has no class sub-folders. Put each class's images in its own sub-folder, "
            f"e.g. {directory}/cat/1.jpg, {directory}/dog/2.jpg."
        ) from None
    empty = [c for c in classes if not any(Path(directory, c).rglob("*"))]
    if empty:
        raise DataError(
            f"{dataset}: class folder(s) {', '.join(empty)} in {directory} are empty; add images or remove them."
        )
    try:
        samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as error:
        raise DataError(f"{dataset}: {error}") from None
    if len(classes) < 2:
        raise DataError(
            f"{dataset}: {directory} has only one class folder ({classes[0]}); classification needs at least 2."
        )
    return [s[0] for s in samples], [s[1] for s in samples], classes


def load_folder(spec: str, root: Path, val_split: float = 0.2, seed: int = 0) -> ImageDataset:
    """``folder:PATH``: PATH/<class>/*.jpg, or PATH/train/<class>/ and PATH/val/<class>/ if both exist."""
    path = Path(spec.split(":", 1)[1]).expanduser()
    train_dir, val_dir = path / "train", path / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        train_paths, train_labels, classes = scan_folder(train_dir, spec)
        val_paths, val_labels, val_classes = scan_folder(val_dir, spec)
        if val_classes != classes:
            raise DataError(f"{spec}: train/ and val/ have different class folders; they must match.")
        train = FileImageSet(train_paths, torch.tensor(train_labels))
        test = FileImageSet(val_paths, torch.tensor(val_labels))
    else:
        paths, labels, classes = scan_folder(path, spec)
        train, test = split_files(paths, labels, val_split, seed)
    return ImageDataset(spec, train, test, classes, source=str(path))


@register_dataset(
    "imagenet",
    "ImageNet (ILSVRC-2012) in the standard layout <root>/imagenet/{train,val}/<wnid>/*.JPEG",
    augment="alexnet-2012",
)
def _imagenet(root: Path, fetch: bool = False) -> ImageDataset:
    folder = root / "imagenet"
    if fetch:
        raise DataError(
            "ImageNet cannot be downloaded automatically (its licence requires signing in at image-net.org). "
            f"Place train/ and val/ (one sub-folder per class, val sorted into class folders) in {folder}."
        )
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        raise DataError(
            f"ImageNet is not in {folder}: expected {folder}/train/<wnid>/*.JPEG and {folder}/val/<wnid>/*.JPEG "
            "(the validation images sorted into class folders). Get the files from image-net.org."
        )
    return load_folder(f"folder:{folder}", root)


def _caltech(name: str, tv_name: str, root: Path, fetch: bool, val_split: float = 0.2) -> ImageDataset:
    import torchvision.datasets as tvd

    tv_class = getattr(tvd, tv_name)

    def build(download_now: bool):
        return tv_class(str(root), download=download_now)

    folder_name = "101_ObjectCategories" if name == "caltech101" else "256_ObjectCategories"
    dataset = _torchvision_set(
        name,
        build,
        root / name,
        fetch,
        [folder_name + "/"],
        "the Caltech archive (see torchvision.datasets." + tv_name + ")",
    )
    base = Path(dataset.root) / folder_name
    if name == "caltech101":
        paths = [
            str(base / dataset.categories[y] / f"image_{i:04d}.jpg")
            for i, y in zip(dataset.index, dataset.y, strict=True)
        ]
    else:
        paths = [
            str(base / dataset.categories[y] / f"{y + 1:03d}_{i:04d}.jpg")
            for i, y in zip(dataset.index, dataset.y, strict=True)
        ]
    train, test = split_files(paths, list(dataset.y), val_split)
    return ImageDataset(name, train, test, list(dataset.categories), source=str(base))


@register_dataset(
    "caltech101", "Caltech-101: ~9,000 photos of 101 categories (seeded 80/20 split)", augment="alexnet-2012"
)
def _caltech101(root: Path, fetch: bool = False) -> ImageDataset:
    return _caltech("caltech101", "Caltech101", root, fetch)


@register_dataset(
    "caltech256", "Caltech-256: ~30,600 photos of 257 categories (seeded 80/20 split)", augment="alexnet-2012"
)
def _caltech256(root: Path, fetch: bool = False) -> ImageDataset:
    return _caltech("caltech256", "Caltech256", root, fetch)


register_prefix_loader("folder:", "your own images, one sub-folder per class", "crop-flip", load_folder)
