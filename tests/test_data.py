import pytest
import torch
from PIL import Image

from cnnlab.data import DeviceTensorLoader, ImageSet, Preprocessing, list_datasets, load_dataset
from cnnlab.data.augment import RandomAffine, get_augmentation
from cnnlab.errors import DataError, ImageDecodeError, UnknownNameError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_is_the_real_bundled_set_with_a_fixed_stratified_split(digits):
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 360
    assert digits.image_shape == (1, 8, 8) and digits.train.images.dtype == torch.uint8
    assert digits.classes == [str(i) for i in range(10)]
    counts = torch.bincount(digits.test.labels, minlength=10)
    assert counts.min() >= 35  # stratified: every class ~36
    again = load_dataset("digits")
    assert torch.equal(again.test.images, digits.test.images)


def test_unknown_dataset_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        load_dataset("digit")
    assert "digits" in list_datasets()


def test_imageset_and_dataset_validation():
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="labels of shape"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


def _loader(n=10, batch=4, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    pre = Preprocessing(1, (2, 2), 0, (0.0,), (1 / 255,))  # normalize() gives back the raw values
    return DeviceTensorLoader(images, torch.arange(n), pre, batch, **kw)


def test_loader_order_is_a_function_of_seed_and_epoch():
    loader = _loader(shuffle=True, seed=3)
    epoch0 = torch.cat([y for _, y in loader.batches(0)])
    assert sorted(epoch0.tolist()) == list(range(10))
    assert torch.equal(epoch0, torch.cat([y for _, y in _loader(shuffle=True, seed=3).batches(0)]))
    assert not torch.equal(epoch0, torch.cat([y for _, y in loader.batches(1)]))
    tail = torch.cat([y for _, y in loader.batches(0, start_batch=1)])
    assert torch.equal(tail, epoch0[4:])  # resuming mid-epoch sees the same remaining batches
    images, labels = next(iter(loader.batches(0)))
    assert torch.equal(images[:, 0, 0, 0], labels.float())  # images travel with their labels


def test_loader_partial_batches():
    assert len(_loader(10, 4)) == 3 and len(_loader(10, 4, drop_last=True)) == 2
    assert [len(y) for _, y in _loader(10, 4).batches()] == [4, 4, 2]


def test_affine_augmentation_is_seeded_and_identity_at_zero_range():
    images = torch.rand(6, 1, 16, 16)
    aug = get_augmentation("lenet-distortions")
    a = aug(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, aug(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, aug(images, torch.Generator().manual_seed(2)))
    identity = RandomAffine(translate=0, scale=0, squeeze=0, shear=0, rotate=0)
    torch.testing.assert_close(identity(images, torch.Generator()), images, atol=1e-5, rtol=0)


def test_affine_translation_moves_pixels():
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 8, 8] = 1
    shift = RandomAffine(translate=0.125, scale=0, squeeze=0, shear=0)  # up to 2 px of 16 (grid side = 2)
    moved = shift(image, torch.Generator().manual_seed(0))
    peak = divmod(int(moved.flatten().argmax()), 16)
    assert peak != (8, 8) and abs(peak[0] - 8) <= 2 and abs(peak[1] - 8) <= 2


def test_preprocessing_fit_resize_and_pad():
    pre = Preprocessing(1, (28, 28), 2, (0.5,), (0.25,))
    assert pre.input_size == (1, 32, 32)
    out = pre.to_stored_size(torch.full((3, 1, 14, 14), 200, dtype=torch.uint8))
    assert out.shape == (3, 1, 32, 32) and out[0, 0, 0, 0] == 0 and out[0, 0, 16, 16] == 200
    x = pre.normalize(out)
    assert torch.allclose(x[0, 0, 16, 16], torch.tensor((200 / 255 - 0.5) / 0.25))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_load_image_converts_any_mode(tmp_path, mode):
    grey, rgb = Preprocessing(1, (32, 32), 0, (0.5,), (0.5,)), Preprocessing(3, (32, 32), 0, (0.5,) * 3, (0.5,) * 3)
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    assert grey.load_image(path).shape == (1, 32, 32)
    assert rgb.load_image(path).shape == (3, 32, 32)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert Preprocessing(1, (8, 8), 0, (0.5,), (0.5,)).load_image(tmp_path / "clear.png").min() == 255


def test_undecodable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    pre = Preprocessing(1, (32, 32), 0, (0.5,), (0.5,))
    with pytest.raises(ImageDecodeError, match="broken.png"):
        pre.load_image(bad)
    with pytest.raises(ImageDecodeError, match="does not exist"):
        pre.load_image(tmp_path / "nope.png")


def test_preview_rows_are_labelled_and_titled(tmp_path):
    from cnnlab.data import load_dataset
    from cnnlab.data.preview import preview_figure, preview_grid

    dataset = load_dataset("digits")
    figure = preview_figure(dataset, "lenet-distortions", count=3, draws=2)
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["as stored", "augmented draw 1", "augmented draw 2"]
    assert figure.get_suptitle() == "digits: 3 training images\n--augment lenet-distortions"
    assert ax.images[0].get_array().shape[:2] == (2 + 3 * (96 + 2), 2 + 3 * (96 + 2))  # 8×8 digits shown 12× larger
    assert preview_grid(dataset, "none", tmp_path / "p.png", count=2).is_file()
