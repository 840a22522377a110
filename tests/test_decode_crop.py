"""Decoding at the size the crop needs (resnets.data.decode): the same crops as torchvision's RandomResizedCrop,
from a JPEG decoded at a reduced DCT scale where the box allows it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from resnets.data import decode
from resnets.data.decode import DecodeRandomResizedCrop, DecodeScaleCrop, decode_jpeg_batch, random_resized_crop_box
from resnets.data.images import load_img
from resnets.errors import BadInput


def _photo(width=1024, height=768, orientation=None) -> bytes:
    """A smooth JPEG (gradients and a few discs), so reduced-scale decoding changes little but a wrong box shows."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1).astype(np.uint8)
    img = Image.fromarray(pixels)
    for k in range(4):  # asymmetric landmarks
        img.paste((255, 255 * (k % 2), 0), (100 + 200 * k, 80 + 120 * k, 180 + 200 * k, 160 + 120 * k))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    img.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_boxes_equal_torchvision_get_params_draw_for_draw():
    from torchvision.transforms import RandomResizedCrop

    sizes = [(375, 500), (500, 333), (64, 900), (900, 64), (224, 224)]
    for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.35, 1.0), (0.5, 2.0))]:
        for height, width in sizes:
            torch.manual_seed(height + width)
            ours = [random_resized_crop_box(height, width, scale, ratio) for _ in range(200)]
            torch.manual_seed(height + width)
            pixels = torch.zeros(1, height, width, dtype=torch.uint8)
            theirs = [tuple(RandomResizedCrop.get_params(pixels, list(scale), list(ratio))) for _ in range(200)]
            assert ours == theirs


def test_box_statistics_match_torchvision_over_many_draws():
    """Independent seeds: the crops' area fractions and aspect ratios follow torchvision's distribution."""
    from torchvision.transforms import RandomResizedCrop

    height, width, n = 375, 500, 4000
    torch.manual_seed(1)
    ours = np.array([random_resized_crop_box(height, width)[2:] for _ in range(n)], dtype=float)
    torch.manual_seed(2)
    pixels = torch.zeros(1, height, width)
    theirs = np.array([RandomResizedCrop.get_params(pixels, [0.08, 1.0], [3 / 4, 4 / 3])[2:] for _ in range(n)],
                      dtype=float)
    for stat in (lambda b: b[:, 0] * b[:, 1] / (height * width), lambda b: np.log(b[:, 1] / b[:, 0])):
        a, b = stat(ours), stat(theirs)
        assert abs(a.mean() - b.mean()) < 4 * np.sqrt((a.var() + b.var()) / n)
        assert np.abs(np.quantile(a, [0.1, 0.5, 0.9]) - np.quantile(b, [0.1, 0.5, 0.9])).max() < 0.05


@pytest.mark.parametrize("orientation", [None, 6])
def test_crop_equals_torchvision_on_the_full_decode(orientation):
    """Same seed, same box: our reduced-scale crop is within JPEG-scaling noise of torchvision's RandomResizedCrop
    of the fully decoded (upright) photo."""
    data = _photo(orientation=orientation)
    full = load_img(io.BytesIO(data))
    ours_t = DecodeRandomResizedCrop(176)
    theirs_t = v2.RandomResizedCrop(176, antialias=True)
    for seed in range(8):
        torch.manual_seed(seed)
        ours = ours_t(data).permute(1, 2, 0).numpy().astype(float)
        torch.manual_seed(seed)
        theirs = np.asarray(theirs_t(full), dtype=float)
        assert ours.shape == theirs.shape == (176, 176, 3)
        assert np.abs(ours - theirs).mean() < 3.0, seed


def test_decodes_at_the_smallest_scale_that_keeps_the_box(monkeypatch):
    factors = []

    def scale(header, side):
        result = real(header, side)
        factors.append(result[0])
        return result

    real = decode._dct_scale
    monkeypatch.setattr(decode, "_dct_scale", scale)
    data = _photo(2048, 1536)
    DecodeRandomResizedCrop(224, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))(data)  # the whole image: 1536 rows -> 224
    DecodeRandomResizedCrop(224, scale=(0.1, 0.1), ratio=(1.0, 1.0))(data)  # a 561-pixel box: 1/4 would be 140
    DecodeRandomResizedCrop(224, scale=(0.05, 0.05), ratio=(1.0, 1.0))(data)  # a 397-pixel box: 1/2 would be 198
    assert factors == [4, 2, 1]  # 1/4 (1/8 leaves 192 rows < 224), 1/2, in full


def _jpegs() -> dict[str, bytes]:
    """Every layout the partial decoder meets: 4:2:0, 4:2:2 and 4:4:4 chroma, grayscale, progressive, restart
    markers, sizes that are not whole MCUs; and two real photos."""
    rgb = Image.open(io.BytesIO(_photo(333, 251))).convert("RGB")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (77, 130, 3), dtype=np.uint8))
    files = {}
    for name, img, options in [("420", rgb, {"subsampling": 2}), ("422", rgb, {"subsampling": 1}),
                               ("444", rgb, {"subsampling": 0}), ("gray", rgb.convert("L"), {}),
                               ("progressive", rgb, {"progressive": True}), ("noise", noise, {"subsampling": 2}),
                               ("restarts", rgb, {"subsampling": 2, "restart_marker_blocks": 3})]:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=90, **options)
        files[name] = out.getvalue()
    for photo in sorted(SAMPLES.glob("*.JPEG"))[:2] if SAMPLES.is_dir() else []:
        files[photo.name] = photo.read_bytes()
    return files


SAMPLES = Path(__file__).parents[1] / ".." / "shared" / "data" / "imagenet-samples"
needs_extension = pytest.mark.skipif(decode._jpegcrop is None, reason="resnets.data._jpegcrop not built")


@needs_extension
def test_partial_decoding_gives_the_whole_decodes_pixels():
    """libjpeg-turbo's partial decode (rows skipped, columns cropped) against simplejpeg's whole decode (PIL's
    pixels) cut to the same box, at every DCT scale, boxes at the edges and inside iMCUs included."""
    import simplejpeg

    rng = np.random.default_rng(0)
    for name, data in _jpegs().items():
        height, width = Image.open(io.BytesIO(data)).size[::-1]
        for denom in (1, 2, 4, 8):
            whole = simplejpeg.decode_jpeg(data, "RGB", min_height=-(-height // denom), min_width=-(-width // denom))
            rows, cols = whole.shape[:2]
            boxes = [(0, 0, rows, cols), (rows - 1, cols - 1, 1, 1)]
            for _ in range(12):
                h, w = int(rng.integers(1, rows + 1)), int(rng.integers(1, cols + 1))
                boxes.append((int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1)), h, w))
            for top, left, h, w in boxes:
                ours = np.frombuffer(decode._jpegcrop.decode_crop(data, denom, top, left, h, w), np.uint8)
                assert np.array_equal(ours.reshape(h, w, 3), whole[top:top + h, left:left + w]), (name, denom, top,
                                                                                                   left, h, w)


@needs_extension
def test_crops_are_the_same_with_and_without_partial_decoding(monkeypatch):
    jpegs = list(_jpegs().values())
    for transform in (DecodeRandomResizedCrop(64), DecodeScaleCrop(96, 100, 180)):
        outputs = []
        for extension in (decode._jpegcrop, None):
            monkeypatch.setattr(decode, "_jpegcrop", extension)
            torch.manual_seed(0)
            outputs.append([transform(data) for data in jpegs for _ in range(4)])
        assert all(torch.equal(a, b) for a, b in zip(*outputs))


@needs_extension
def test_partial_decoding_refuses_corrupt_data_and_boxes_outside():
    data = _photo(64, 48)
    with pytest.raises(ValueError, match="libjpeg"):
        decode._jpegcrop.decode_crop(data[:300], 1, 0, 0, 8, 8)  # truncated: libjpeg's warning, not grey rows
    with pytest.raises(ValueError, match="libjpeg"):
        decode._jpegcrop.decode_crop(b"not a jpeg", 1, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="outside the 64x48 image"):
        decode._jpegcrop.decode_crop(data, 1, 40, 0, 9, 8)
    with pytest.raises(ValueError, match="denom"):
        decode._jpegcrop.decode_crop(data, 3, 0, 0, 8, 8)


@pytest.mark.skipif(not Path("/usr/include/jpeglib.h").is_file(), reason="no libjpeg headers to build against")
def test_the_extension_is_built_where_libjpeg_is():
    assert decode._jpegcrop is not None, "libjpeg's headers are here but resnets.data._jpegcrop was not built"


def test_a_corrupt_jpeg_is_named(tmp_path):
    from resnets.data.images import ImageLoadError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_photo(64, 48)[:300])
    torch.manual_seed(0)
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        DecodeRandomResizedCrop(32, scale=(1.0, 1.0))(bad)


@pytest.mark.parametrize("orientation", [None, 8])
def test_scale_augmentation_equals_resize_then_random_crop(orientation):
    """The paper's scale augmentation by hand on the full decode: the shorter side resized to a size drawn from
    [256, 480] (torchvision's resize), then a 224 crop at a drawn place; the same draws, within JPEG-scaling noise."""
    data = _photo(1024, 700, orientation)
    full = load_img(io.BytesIO(data))
    for seed in range(6):
        torch.manual_seed(seed)
        ours = DecodeScaleCrop(224)(data).permute(1, 2, 0).numpy().astype(float)
        torch.manual_seed(seed)
        resized = v2.functional.resize(full, int(torch.randint(256, 481, (1,))), antialias=True)
        top = int(torch.randint(0, resized.height - 224 + 1, (1,)))
        left = int(torch.randint(0, resized.width - 224 + 1, (1,)))
        theirs = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=float)
        assert ours.shape == theirs.shape == (224, 224, 3)
        assert np.abs(ours - theirs).mean() < 3.0, seed


def test_scale_crop_arguments():
    with pytest.raises(BadInput, match="size <= low <= high"):
        DecodeScaleCrop(300, 256, 480)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_gpu_decoding_without_cuda_is_a_clear_bad_input():
    with pytest.raises(BadInput, match="needs a CUDA device"):
        decode_jpeg_batch([_photo(64, 48)])


def test_uint8_crops_normalise_exactly_as_torchvisions_reference_transforms():
    from resnets.data.train_input import TrainDecode
    from resnets.preprocess import Preprocessing

    torch.manual_seed(0)
    batch = torch.stack([TrainDecode(48)(_photo(160, 120)) for _ in range(6)])
    assert batch.dtype == torch.uint8 and batch.shape == (6, 3, 48, 48)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    assert torch.equal(Preprocessing(mean, std).normalize(batch), torch.stack([reference(x) for x in batch]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decoding_equals_the_cpu_decode():
    data = [_photo(96, 64), _photo(64, 80)]
    gpu = decode_jpeg_batch(data)
    for pixels, raw in zip(gpu, data):
        cpu = torch.from_numpy(np.array(load_img(io.BytesIO(raw)))).permute(2, 0, 1)
        assert pixels.is_cuda and pixels.shape == cpu.shape
        assert (pixels.cpu().float() - cpu.float()).abs().mean() < 2  # nvJPEG's IDCT differs from libjpeg's a little


def test_plain_jpegs_decode_to_pils_pixels_and_the_rest_go_through_pil(tmp_path):
    """libjpeg-turbo called directly gives PIL's pixels exactly; CMYK, EXIF-turned, grayscale and PNG files come
    out as upright RGB too."""
    data = _photo(160, 120)
    header = decode.read_header(data)
    assert header.plain_jpeg
    ours = decode.decode_pixels(data, header, 120)  # the full size: no DCT scaling
    assert torch.equal(ours, torch.from_numpy(np.array(load_img(io.BytesIO(data)))).permute(2, 0, 1))
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    files = {}
    for name, img, fmt in [("cmyk.jpg", rgb.convert("CMYK"), "JPEG"), ("gray.jpg", rgb.convert("L"), "JPEG"),
                           ("photo.png", rgb, "PNG")]:
        img.save(tmp_path / name, fmt)
        files[name] = tmp_path / name
    (tmp_path / "turned.jpg").write_bytes(_photo(160, 120, orientation=6))
    files["turned.jpg"] = tmp_path / "turned.jpg"
    for name, path in files.items():
        header = decode.read_header(path)
        assert header.plain_jpeg == (name == "gray.jpg"), name
        x = decode.decode_pixels(path, header, min(header.width, header.height))
        expected = np.array(load_img(path))
        assert x.shape == (3, *expected.shape[:2]) and (x.shape[1], x.shape[2]) == (header.height, header.width)
        assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1)), name


def test_headers_read_without_pil_agree_with_pil_and_refuse_bombs(monkeypatch):
    from resnets.data.images import ImageLoadError

    rgb = Image.open(io.BytesIO(_photo(160, 120))).convert("RGB")
    plain = None
    for mode, subsampling in (("RGB", 2), ("RGB", 0), ("L", 0), ("CMYK", 0)):
        out = io.BytesIO()
        rgb.convert(mode).save(out, "JPEG", subsampling=subsampling)  # no EXIF block: libjpeg-turbo reads it
        data = out.getvalue()
        assert b"Exif" not in data
        assert decode.read_header(data) == decode.Header(160, 120, mode != "CMYK"), mode
        plain = plain or data
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 160 * 120 - 1)  # PIL refuses it then: so does the fast path
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode.read_header(plain)
