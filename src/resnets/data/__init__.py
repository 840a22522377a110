"""Image data: files to RGB pixels (``images``), what a data set holds (``source``; ILSVRC-2012's layouts in
``imagenet``), decoded tensors (``tensors``), WebDataset shards (``shards``, ``shard_writer``), decoding at the size
a training crop needs (``decode``) and the training input pipeline built on it (``train_input``)."""

from .images import (
    IMAGE_EXTENSIONS, ImageBatch, ImageFiles, ImageLoadError, ImageSample, array_to_img, collate_images,
    find_images, img_to_array, load_img, to_rgb,
)

__all__ = [
    "IMAGE_EXTENSIONS", "ImageBatch", "ImageFiles", "ImageLoadError", "ImageSample", "array_to_img",
    "collate_images", "find_images", "img_to_array", "load_img", "to_rgb",
]
