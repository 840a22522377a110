"""Image data: files to RGB pixels (``images``), what a data set holds (``source``), decoded tensors (``tensors``)."""

from .images import (
    IMAGE_EXTENSIONS, ImageBatch, ImageFiles, ImageLoadError, ImageSample, array_to_img, collate_images,
    find_images, img_to_array, load_img, to_rgb,
)

__all__ = [
    "IMAGE_EXTENSIONS", "ImageBatch", "ImageFiles", "ImageLoadError", "ImageSample", "array_to_img",
    "collate_images", "find_images", "img_to_array", "load_img", "to_rgb",
]
