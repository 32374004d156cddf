import gzip
import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_images, write_png_folder
from dcgan.data import Batches, cache_key, load_images, preprocess, to_tensor
from dcgan.errors import DcganError
from dcgan.sources import resolve_source


def decode(spec, size, channels, cache_dir=None, log=None):
    messages = []
    images = load_images(resolve_source(str(spec)), size, channels, cache_dir, log=messages.append if log is None else log)
    return images, messages


# ---------------------------------------------------------------- the transform


def test_preprocess_resizes_the_shorter_side_and_center_crops():
    # a 40x20 (w x h) image: left quarter black, middle half grey, right quarter white
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, 10:30] = 128
    array[:, 30:] = 255
    out = preprocess(Image.fromarray(array), 16, 3)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    # shorter side 20 -> 16 makes it 32x16; the center 16 columns are the grey middle half
    # (the outermost columns blend a little with the neighbours: bilinear with antialiasing)
    assert np.all(out[:, 1:-1] == 128)
    assert 110 < out[:, 0].mean() < 128 < out[:, -1].mean() < 146


def test_preprocess_converts_channels_both_ways():
    rgb = random_images(1, 32, 32, 3)[0]
    gray = preprocess(Image.fromarray(rgb), 32, 1)
    assert gray.shape == (32, 32, 1)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    back = preprocess(Image.fromarray(gray[..., 0]), 32, 3)
    assert back.shape == (32, 32, 3) and np.all(back[..., 0] == back[..., 1])


def test_to_tensor_scales_to_minus_one_one_like_the_tutorial():
    images = np.array([[[[0], [255]], [[128], [64]]]], np.uint8)  # (1, 2, 2, 1)
    batch = to_tensor(images)
    assert batch.shape == (1, 1, 2, 2)
    expected = (torch.tensor([[0, 255], [128, 64]]) / 255.0 - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5)
    torch.testing.assert_close(batch[0, 0], expected)


# ---------------------------------------------------------------- sources agree on identical images


def test_folder_and_zip_yield_identical_tensors(tmp_path):
    images = random_images(6, 40, 30, 3)
    folder = tmp_path / "photos"
    paths = write_png_folder(folder / "nested", images)  # recursive: images sit one level down
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for path in paths:
            archive.write(path, f"img_align/{path.name}")
    from_folder, _ = decode(folder, 16, 3)
    from_zip, _ = decode(tmp_path / "photos.zip", 16, 3)
    assert from_folder.images.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(from_folder.images), np.asarray(from_zip.images))
    expected = np.stack([preprocess(Image.fromarray(image), 16, 3) for image in images])
    np.testing.assert_array_equal(np.asarray(from_folder.images), expected)


def _idx_bytes(images: np.ndarray) -> bytes:
    count, rows, cols = images.shape
    header = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (count, rows, cols))
    return header + images.tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_folder_matches_a_png_folder(tmp_path, compressed):
    digits = random_images(5, 28, 28, 1)[..., 0]
    idx_dir = tmp_path / "fashion"
    idx_dir.mkdir()
    data = _idx_bytes(digits)
    name = "train-images-idx3-ubyte"
    if compressed:
        (idx_dir / (name + ".gz")).write_bytes(gzip.compress(data))
    else:
        (idx_dir / name).write_bytes(data)
    (idx_dir / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    write_png_folder(tmp_path / "pngs", digits[..., None])
    from_idx, _ = decode(idx_dir, 32, 1)
    from_pngs, _ = decode(tmp_path / "pngs", 32, 1)
    assert from_idx.source.kind == "idx" and from_idx.images.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(np.asarray(from_idx.images), np.asarray(from_pngs.images))


def _cifar_batch(images: np.ndarray) -> bytes:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # R plane, G plane, B plane
    return pickle.dumps({b"batch_label": b"x", b"labels": [0] * len(images), b"data": rows}, protocol=2)


def test_cifar_tarball_and_folder_match_a_png_folder(tmp_path):
    images = random_images(7, 32, 32, 3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(_cifar_batch(images[:4]))
    (folder / "data_batch_2").write_bytes(_cifar_batch(images[4:]))
    (folder / "test_batch").write_bytes(_cifar_batch(images[:1]))  # not used: training batches exist
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    write_png_folder(tmp_path / "pngs", images)
    from_tar, _ = decode(tmp_path / "cifar-10-python.tar.gz", 32, 3)
    from_dir, _ = decode(tmp_path, 32, 3)  # the folder that holds cifar-10-batches-py
    from_pngs, _ = decode(tmp_path / "pngs", 32, 3)
    assert from_tar.images.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(np.asarray(from_tar.images), np.asarray(from_pngs.images))
    np.testing.assert_array_equal(np.asarray(from_dir.images), np.asarray(from_pngs.images))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode()}, protocol=2))
    with pytest.raises(DcganError, match="refusing .*print"):
        resolve_source(str(folder))
    assert "must never run" not in capsys.readouterr().out


def test_embedded_mnist_is_real_digits():
    images, _ = decode("mnist", 32, 1)
    assert images.images.shape == (5000, 32, 32, 1)
    array = np.asarray(images.images)
    # handwritten digits: mostly black background, bright strokes near the center
    assert array[:, :4].mean() < 5 and array[:, 12:20, 12:20].mean() > 60


def test_sklearn_digits_are_upscaled():
    images, _ = decode("digits", 16, 1)
    assert images.images.shape == (1797, 16, 16, 1) and np.asarray(images.images).max() == 255


def test_fake_source_is_colour_noise_kept_in_memory():
    images, _ = decode("fake", 16, 3)
    assert images.images.shape[1:] == (16, 16, 3) and images.cache_path is None


# ---------------------------------------------------------------- decode once, rebuild on change


def test_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path):
    folder = tmp_path / "photos"
    write_png_folder(folder, random_images(4, 20, 20, 3))
    first, messages = decode(folder, 16, 3)
    assert any("decoded 4 images" in m for m in messages)

    source = resolve_source(str(folder))
    source.loaders = [lambda: (_ for _ in ()).throw(AssertionError("decoded again"))] * len(source)
    again = load_images(source, 16, 3, None, log=lambda m: None)  # every loader would fail if called
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))

    write_png_folder(folder, random_images(1, 20, 20, 3, seed=5), prefix="new")
    changed, messages = decode(folder, 16, 3)
    assert len(changed) == 5 and any("decoded 5 images" in m for m in messages)
    assert cache_key(resolve_source(str(folder)), 16, 3) != cache_key(source, 16, 3)


# ---------------------------------------------------------------- bad and mixed input


def test_corrupt_truncated_and_non_image_files(tmp_path):
    folder = tmp_path / "mixed"
    write_png_folder(folder, random_images(3, 20, 20, 3))
    good_jpeg = io.BytesIO()
    Image.fromarray(random_images(1, 64, 64, 3)[0]).save(good_jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (folder / "notes.txt").write_text("not an image, ignored")
    (folder / "labels.csv").write_text("a,b")
    images, messages = decode(folder, 16, 3)
    assert len(images) == 3 and images.skipped == 2
    assert len(resolve_source(str(folder))) == 5  # .txt and .csv were never considered


def _file(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "data path not found"),
        (lambda p: _file(p / "empty" / "notes.txt", b"no images here").parent, "no image files in"),
        (lambda p: _file(p / "bad" / "a.jpg", b"nope").parent, "none of the 1 image files"),
        (lambda p: _file(p / "x.zip", b"not a zip"), "cannot read zip file"),
        (lambda p: _file(p / "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((9, 4, 4), np.uint8))[:40]), "truncated"),
    ],
)
def test_bad_data_paths_raise_one_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DcganError, match=message) as caught:
        decode(path, 16, 3)
    assert "\n" not in str(caught.value)


def test_unknown_data_word_names_the_choices():
    with pytest.raises(DcganError, match="unknown data source 'celeba'.*mnist, digits, fake"):
        resolve_source("celeba")


# ---------------------------------------------------------------- batches


def test_batch_order_depends_only_on_seed_and_epoch():
    images = random_images(50, 8, 8, 1)
    a, b = Batches(images, 16, seed=3), Batches(images, 16, seed=3)
    assert len(a) == 3  # drop_last: 50 // 16
    first = [batch for batch in a.epoch(1)]
    assert all(torch.equal(x, y) for x, y in zip(first, b.epoch(1)))
    assert not torch.equal(first[0], next(iter(a.epoch(2))))
    assert not torch.equal(first[0], next(iter(Batches(images, 16, seed=4).epoch(1))))
    assert [x.shape for x in first] == [(16, 1, 8, 8)] * 3
    # starting inside an epoch gives the same later batches
    assert torch.equal(next(iter(a.epoch(1, start=2))), first[2])


def test_batch_larger_than_data_set_is_refused():
    with pytest.raises(DcganError, match="batch size 64 is larger than the data set \\(10 images\\)"):
        Batches(random_images(10, 8, 8, 1), 64, seed=0)
