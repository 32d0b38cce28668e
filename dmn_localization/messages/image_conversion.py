"""
The project's one conversion between ``sensor_msgs/Image`` and numpy arrays.

Every place that turns an image message into pixels (the node, the bag tools, the
tests) goes through :func:`imgmsg_to_array` / :func:`imgmsg_to_rgb8`, and every place
that makes an image message goes through :func:`array_to_imgmsg`.

Two back ends:

* a real ROS 2 ``cv_bridge`` (robots with apt ROS have it), used only when it imports
  *and* passes a round-trip self-check on a padded image. The PyPI ``cv-bridge`` 1.13
  is a ROS 1 port that fails with ROS 2 messages and numpy 2 (``ndarray.tostring``,
  "buffer is too small"); the self-check rejects it and anything else that is broken;
* a numpy path for ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` and ``mono16``
  that honours ``step`` (row padding) and ``is_bigendian``.

Reading works on any object with the ``sensor_msgs/Image`` fields (``height``,
``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``), so messages read from
bags with ``rosbags`` convert the same way as rclpy messages. This module imports no
ROS package at import time.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

#: encoding -> (numpy dtype of one channel, number of channels)
ENCODINGS: Dict[str, Tuple[str, int]] = {
    'rgb8': ('u1', 3),
    'bgr8': ('u1', 3),
    'rgba8': ('u1', 4),
    'bgra8': ('u1', 4),
    'mono8': ('u1', 1),
    'mono16': ('u2', 1),
}


class ImageConversionError(ValueError):
    """Base class of every error raised while converting an image."""


class UnsupportedEncodingError(ImageConversionError):
    """The message (or the requested output) uses an encoding this module does not handle."""


class ImageDataSizeError(ImageConversionError):
    """The message's ``data``, ``step``, ``height`` and ``width`` do not agree."""


class EmptyImageError(ImageDataSizeError):
    """The message has no pixels: its width or height is 0."""


def _check_not_empty(msg: Any) -> None:
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise EmptyImageError(
            f'{msg.encoding} image {int(msg.width)}x{int(msg.height)} has no pixels: '
            f'width and height must be at least 1')


def _encoding_info(encoding: str) -> Tuple[str, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        ) from None


def _data_bytes(data: Any) -> bytes:
    """Return the message's ``data`` field as bytes (rclpy gives array('B') or bytes)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).tobytes()
    try:
        return memoryview(data).tobytes()
    except TypeError:
        return bytes(bytearray(data))


def numpy_imgmsg_to_array(msg: Any) -> np.ndarray:
    """
    Decode an image message with numpy only.

    Returns ``(H, W, C)`` for colour encodings and ``(H, W)`` for mono encodings, with
    dtype ``uint8`` (``uint16`` for ``mono16``) in the message's own channel order and
    native byte order. The result owns its memory.
    """
    channel_dtype, channels = _encoding_info(msg.encoding)
    _check_not_empty(msg)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(channel_dtype).newbyteorder('>' if msg.is_bigendian else '<')
    row_bytes = width * channels * dtype.itemsize
    data = _data_bytes(msg.data)
    if height < 0 or width < 0 or step < row_bytes:
        raise ImageDataSizeError(
            f'{msg.encoding} image {width}x{height}: step {step} is smaller than one row '
            f'({row_bytes} bytes = width {width} x {channels} channel(s) x {dtype.itemsize})'
        )
    if len(data) != height * step:
        raise ImageDataSizeError(
            f'{msg.encoding} image {width}x{height} with step {step}: expected '
            f'height x step = {height * step} data bytes, received {len(data)}'
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    pixels = pixels.astype(dtype.newbyteorder('='), copy=True)
    return pixels[:, :, 0] if channels == 1 else pixels


def _checked_array(array: np.ndarray, encoding: str) -> np.ndarray:
    """Return ``array`` as ``(H, W, C)`` after checking it matches ``encoding``."""
    channel_dtype, channels = _encoding_info(encoding)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ImageConversionError(
            f'encoding {encoding!r} needs an array of shape (H, W, {channels})'
            f'{" or (H, W)" if channels == 1 else ""}, received shape {np.shape(array)}'
        )
    if array.dtype != np.dtype(channel_dtype):
        raise ImageConversionError(
            f'encoding {encoding!r} needs dtype {np.dtype(channel_dtype).name}, '
            f'received {array.dtype.name}'
        )
    return array


def numpy_array_to_imgmsg(array: np.ndarray, encoding: str, msg: Any) -> Any:
    """
    Fill ``msg`` (a fresh ``sensor_msgs/Image``) from ``array`` with numpy only.

    ``array`` is ``(H, W, C)`` or ``(H, W)`` (mono) with the dtype of ``encoding``.
    The message is little-endian with unpadded rows.
    """
    channel_dtype, channels = _encoding_info(encoding)
    array = _checked_array(array, encoding)
    little = np.ascontiguousarray(array, dtype=np.dtype(channel_dtype).newbyteorder('<'))
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.shape[1] * channels * little.dtype.itemsize)
    msg.data = little.tobytes()
    return msg


# --------------------------------------------------------------------------------------
# Back-end choice: a real ROS 2 cv_bridge when it is importable and works.

_UNCHECKED = object()
_bridge: Any = _UNCHECKED
_bridge_reason = 'not checked yet'


def _default_image_factory() -> Any:
    from sensor_msgs.msg import Image  # imported lazily: this module must not need ROS

    return Image()


def _bridge_self_check(bridge: Any, image_factory: Callable[[], Any]) -> Optional[str]:
    """Return None when ``bridge`` round-trips padded images correctly, else why not."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    mono16 = rng.integers(0, 65536, size=(2, 3), dtype=np.uint16)
    try:
        msg = bridge.cv2_to_imgmsg(rgb, encoding='rgb8')
        if not np.array_equal(np.asarray(bridge.imgmsg_to_cv2(msg, 'passthrough')), rgb):
            return 'rgb8 round trip changed the pixels'
        padded = numpy_array_to_imgmsg(rgb, 'rgb8', image_factory())
        padded.step += 3
        padded.data = b''.join(bytes(padded.data[r * 15:(r + 1) * 15]) + b'\0\0\0'
                               for r in range(3))
        back = np.asarray(bridge.imgmsg_to_cv2(padded, 'passthrough'))
        if not np.array_equal(back, rgb):
            return 'padded rgb8 rows decoded wrongly'
        msg16 = bridge.cv2_to_imgmsg(mono16, encoding='mono16')
        if not np.array_equal(np.asarray(bridge.imgmsg_to_cv2(msg16, 'passthrough')), mono16):
            return 'mono16 round trip changed the pixels'
    except Exception as exc:  # noqa: B902 - any failure means: do not use this bridge
        return f'{type(exc).__name__}: {exc}'
    return None


def select_backend(bridge_module: Any = None,
                   image_factory: Optional[Callable[[], Any]] = None) -> str:
    """
    Choose the conversion back end and return a one-line description of the choice.

    ``bridge_module`` replaces ``import cv_bridge`` (tests pass a fake one);
    ``image_factory`` makes an empty image message for the self-check.
    """
    global _bridge, _bridge_reason
    image_factory = image_factory or _default_image_factory
    if bridge_module is None:
        try:
            import cv_bridge as bridge_module
        except Exception as exc:  # noqa: B902 - ImportError or a broken install
            _bridge, _bridge_reason = None, f'cv_bridge not importable ({exc})'
            return backend_description()
    try:
        bridge = bridge_module.CvBridge()
        problem = _bridge_self_check(bridge, image_factory)
    except Exception as exc:  # noqa: B902
        problem = f'{type(exc).__name__}: {exc}'
    if problem is None:
        _bridge, _bridge_reason = bridge, 'cv_bridge passed the round-trip self-check'
    else:
        _bridge, _bridge_reason = None, f'cv_bridge failed its self-check ({problem})'
    return backend_description()


def backend_description() -> str:
    """Describe the back end in use, e.g. for a node's start-up log."""
    if _bridge is _UNCHECKED:
        return 'not selected yet'
    name = 'cv_bridge' if _bridge is not None else 'numpy'
    return f'{name}: {_bridge_reason}'


def _active_bridge() -> Any:
    if _bridge is _UNCHECKED:
        if 'sensor_msgs' not in sys.modules:
            try:
                import sensor_msgs.msg  # noqa: F401
            except ImportError:
                return None  # no ROS messages at all: the numpy path is the only choice
        select_backend()
    return _bridge


def _is_rclpy_image(msg: Any) -> bool:
    return type(msg).__module__.startswith('sensor_msgs.msg')


def imgmsg_to_array(msg: Any) -> np.ndarray:
    """
    Decode an image message into ``(H, W, C)`` / ``(H, W)`` pixels in its own encoding.

    Raises :class:`UnsupportedEncodingError` for encodings other than :data:`ENCODINGS`,
    :class:`EmptyImageError` for a width or height of 0 and :class:`ImageDataSizeError`
    when ``data`` does not hold ``height x step`` bytes.
    """
    _encoding_info(msg.encoding)
    _check_not_empty(msg)
    bridge = _active_bridge() if _is_rclpy_image(msg) else None
    if bridge is not None:
        # Check the size first so that both back ends raise the same named error.
        if len(_data_bytes(msg.data)) != int(msg.height) * int(msg.step):
            return numpy_imgmsg_to_array(msg)  # raises ImageDataSizeError with details
        return np.array(bridge.imgmsg_to_cv2(msg, 'passthrough'), copy=True)
    return numpy_imgmsg_to_array(msg)


def imgmsg_to_rgb8(msg: Any) -> np.ndarray:
    """Decode any supported image message into ``(H, W, 3)`` uint8 RGB pixels."""
    pixels = imgmsg_to_array(msg)
    encoding = msg.encoding
    if encoding == 'mono16':
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if encoding in ('bgr8', 'bgra8'):
        pixels = pixels[:, :, 2::-1]
    return np.ascontiguousarray(pixels[:, :, :3])


def array_to_imgmsg(array: np.ndarray, encoding: str = 'rgb8', header: Any = None,
                    image_factory: Optional[Callable[[], Any]] = None) -> Any:
    """
    Make an image message from ``(H, W, C)`` / ``(H, W)`` pixels already in ``encoding``.

    ``image_factory`` makes the empty message (default: ``sensor_msgs.msg.Image``);
    pass e.g. the ``rosbags`` type to build bag messages with the same code.
    """
    checked = _checked_array(array, encoding)
    factory = image_factory or _default_image_factory
    bridge = _active_bridge() if image_factory is None else None
    if bridge is not None:
        pixels = checked[:, :, 0] if checked.shape[2] == 1 else checked
        msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=encoding)
    else:
        msg = numpy_array_to_imgmsg(array, encoding, factory())
    if header is not None:
        msg.header = header
    return msg
