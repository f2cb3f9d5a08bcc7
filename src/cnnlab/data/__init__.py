"""Datasets, preprocessing and loaders. Data knows no models."""

from cnnlab.data import (  # noqa: F401  (register the datasets)
    caption_scenes,
    detection_canvas,
    detection_readers,
    distorted,
    jpeg_tree,
    sources,
    tensors,
)
from cnnlab.data.datasets import (
    FileImageSet,
    ImageDataset,
    ImageSet,
    default_data_root,
    get_dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
)
from cnnlab.data.loader import DeviceTensorLoader, Loader
from cnnlab.data.preprocessing import Preprocessing, channel_stats

__all__ = [
    "DeviceTensorLoader",
    "FileImageSet",
    "ImageDataset",
    "ImageSet",
    "Loader",
    "Preprocessing",
    "channel_stats",
    "default_data_root",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
