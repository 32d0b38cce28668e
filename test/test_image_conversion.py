"""sensor_msgs/Image <-> numpy: every supported encoding, padded rows, byte order, errors."""

from types import SimpleNamespace

from dmn_localization.messages import image_conversion as ic
import numpy as np
import pytest
from sensor_msgs.msg import Image

RNG = np.random.default_rng(7)


def random_pixels(encoding, height=5, width=7):
    """Return random ``(H, W, C)`` / ``(H, W)`` pixels of ``encoding``."""
    dtype, channels = ic.ENCODINGS[encoding]
    high = 256 if dtype == 'u1' else 65536
    shape = (height, width) if channels == 1 else (height, width, channels)
    return RNG.integers(0, high, size=shape, dtype=np.dtype(dtype))


def padded_message(pixels, encoding, pad, bigendian=False, factory=Image):
    """Build a message by hand with ``pad`` junk bytes after each row."""
    dtype, channels = ic.ENCODINGS[encoding]
    order = '>' if bigendian else '<'
    raw = np.ascontiguousarray(pixels, dtype=np.dtype(dtype).newbyteorder(order))
    height, width = pixels.shape[:2]
    row = raw.reshape(height, -1).view(np.uint8)
    junk = np.full((height, pad), 0xAB, dtype=np.uint8)
    msg = factory()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(bigendian)
    msg.step = row.shape[1] + pad
    msg.data = np.hstack([row, junk]).tobytes()
    return msg


@pytest.fixture(autouse=True)
def fresh_backend(monkeypatch):
    """Each test chooses the back end anew."""
    monkeypatch.setattr(ic, '_bridge', ic._UNCHECKED)


@pytest.mark.parametrize('encoding', sorted(ic.ENCODINGS))
def test_round_trip_every_encoding(encoding):
    pixels = random_pixels(encoding)
    msg = ic.array_to_imgmsg(pixels, encoding)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step * msg.height == len(msg.data)
    back = ic.imgmsg_to_array(msg)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize('encoding', sorted(ic.ENCODINGS))
@pytest.mark.parametrize('pad', [1, 4, 13])
def test_padded_rows_are_skipped(encoding, pad):
    pixels = random_pixels(encoding, height=4, width=3)
    msg = padded_message(pixels, encoding, pad)
    np.testing.assert_array_equal(ic.imgmsg_to_array(msg), pixels)


def test_mono16_big_endian():
    pixels = np.array([[0x0102, 0xA0B0], [0xFFFF, 0x0001]], dtype=np.uint16)
    msg = padded_message(pixels, 'mono16', pad=2, bigendian=True)
    assert bytes(msg.data[:2]) == b'\x01\x02'  # really big-endian on the wire
    np.testing.assert_array_equal(ic.imgmsg_to_array(msg), pixels)
    little = padded_message(pixels, 'mono16', pad=0, bigendian=False)
    assert bytes(little.data[:2]) == b'\x02\x01'
    np.testing.assert_array_equal(ic.imgmsg_to_array(little), pixels)


def test_duck_typed_messages_from_bags():
    """Messages that are not rclpy types (e.g. read by rosbags) decode the same way."""
    pixels = random_pixels('bgra8')
    msg = padded_message(pixels, 'bgra8', pad=3, factory=SimpleNamespace)
    np.testing.assert_array_equal(ic.imgmsg_to_array(msg), pixels)


def test_rgb8_view_of_each_encoding():
    rgb = random_pixels('rgb8')
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    cases = {
        'rgb8': (rgb, rgb),
        'bgr8': (bgr, rgb),
        'rgba8': (np.concatenate([rgb, alpha], 2), rgb),
        'bgra8': (np.concatenate([bgr, alpha], 2), rgb),
    }
    for encoding, (pixels, expected) in cases.items():
        out = ic.imgmsg_to_rgb8(ic.array_to_imgmsg(pixels, encoding))
        assert out.shape == rgb.shape and out.dtype == np.uint8, encoding
        np.testing.assert_array_equal(out, expected, err_msg=encoding)
    mono = random_pixels('mono8')
    np.testing.assert_array_equal(
        ic.imgmsg_to_rgb8(ic.array_to_imgmsg(mono, 'mono8')), np.stack([mono] * 3, 2))
    mono16 = random_pixels('mono16')
    out16 = ic.imgmsg_to_rgb8(ic.array_to_imgmsg(mono16, 'mono16'))
    np.testing.assert_array_equal(out16[:, :, 1], (mono16 >> 8).astype(np.uint8))


@pytest.mark.parametrize('encoding', ['yuv422', '32FC1', '16UC1', 'bayer_rggb8', ''])
def test_unsupported_encoding_is_named(encoding):
    msg = padded_message(random_pixels('mono8'), 'mono8', pad=0)
    msg.encoding = encoding
    with pytest.raises(ic.UnsupportedEncodingError, match=repr(encoding)):
        ic.imgmsg_to_array(msg)
    with pytest.raises(ic.UnsupportedEncodingError):
        ic.array_to_imgmsg(random_pixels('mono8'), encoding)


def test_data_shorter_than_height_times_step():
    msg = padded_message(random_pixels('rgb8', height=4, width=6), 'rgb8', pad=2)
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ic.ImageDataSizeError, match=r'expected height x step = 80 .* 79'):
        ic.imgmsg_to_array(msg)


def test_data_longer_than_height_times_step():
    msg = padded_message(random_pixels('mono8', height=2, width=2), 'mono8', pad=0)
    msg.data = bytes(msg.data) + b'\0'
    with pytest.raises(ic.ImageDataSizeError, match='received 5'):
        ic.imgmsg_to_array(msg)


def test_step_smaller_than_a_row():
    msg = padded_message(random_pixels('rgba8', height=2, width=4), 'rgba8', pad=0)
    msg.step = 15
    msg.data = bytes(30)
    with pytest.raises(ic.ImageDataSizeError, match='step 15 is smaller than one row'):
        ic.imgmsg_to_array(msg)


def test_array_that_does_not_match_encoding():
    with pytest.raises(ic.ImageConversionError, match=r'shape \(H, W, 3\)'):
        ic.array_to_imgmsg(np.zeros((4, 4, 4), np.uint8), 'rgb8')
    with pytest.raises(ic.ImageConversionError, match='dtype uint16'):
        ic.array_to_imgmsg(np.zeros((4, 4), np.uint8), 'mono16')


class Ros1PortBridge:
    """Behaves like PyPI cv-bridge 1.13 under numpy 2: ndarray.tostring is gone."""

    def cv2_to_imgmsg(self, array, encoding='passthrough'):
        return array.tostring()

    def imgmsg_to_cv2(self, msg, desired_encoding='passthrough'):
        raise TypeError('buffer is too small for requested array')


class WorkingBridge:
    """A correct bridge built on the numpy path, standing in for ROS 2 cv_bridge."""

    calls = 0

    def cv2_to_imgmsg(self, array, encoding='passthrough'):
        WorkingBridge.calls += 1
        return ic.numpy_array_to_imgmsg(array, encoding, Image())

    def imgmsg_to_cv2(self, msg, desired_encoding='passthrough'):
        WorkingBridge.calls += 1
        return ic.numpy_imgmsg_to_array(msg)


def test_broken_cv_bridge_is_rejected():
    module = SimpleNamespace(CvBridge=Ros1PortBridge)
    description = ic.select_backend(module)
    assert description.startswith('numpy: cv_bridge failed its self-check')
    pixels = random_pixels('rgb8')
    np.testing.assert_array_equal(
        ic.imgmsg_to_array(ic.array_to_imgmsg(pixels, 'rgb8')), pixels)


def test_working_cv_bridge_is_used():
    description = ic.select_backend(SimpleNamespace(CvBridge=WorkingBridge))
    assert description.startswith('cv_bridge')
    before = WorkingBridge.calls
    pixels = random_pixels('bgr8')
    np.testing.assert_array_equal(
        ic.imgmsg_to_array(ic.array_to_imgmsg(pixels, 'bgr8')), pixels)
    assert WorkingBridge.calls == before + 2
    short = ic.array_to_imgmsg(pixels, 'bgr8')
    short.data = bytes(short.data)[:-3]
    with pytest.raises(ic.ImageDataSizeError):
        ic.imgmsg_to_array(short)


def test_missing_cv_bridge_falls_back_to_numpy():
    description = ic.select_backend()
    assert description.startswith('numpy') or description.startswith('cv_bridge')
    pixels = random_pixels('mono16')
    np.testing.assert_array_equal(
        ic.imgmsg_to_array(ic.array_to_imgmsg(pixels, 'mono16')), pixels)


@pytest.mark.parametrize('height, width', [(0, 4), (4, 0), (0, 0)])
def test_empty_image_is_refused_by_name(height, width):
    msg = padded_message(random_pixels('rgb8', height=2, width=2), 'rgb8', pad=0)
    msg.height, msg.width, msg.step, msg.data = height, width, width * 3, b''
    with pytest.raises(ic.EmptyImageError, match=f'rgb8 image {width}x{height} has no pixels'):
        ic.imgmsg_to_array(msg)
    with pytest.raises(ic.EmptyImageError):
        ic.imgmsg_to_rgb8(msg)
