"""Data sets: registry and loader, file parsers (IDX, CIFAR-10 binary), folders of your own
images, downloads, augmentation."""

from .augment import augment, random_hflip, random_shift
from .datasets import (DATASETS, Dataset, DatasetInfo, default_data_dir, describe_datasets,
                       get_dataset_info, load_dataset)
from .folder import ImageFolder, load_image_folder, scan_image_folder
from .loader import DataLoader
from .errors import (ChecksumError, DataFormatError, DatasetError, MissingDependencyError,
                     MissingFilesError)

__all__ = [
    "DATASETS", "DataLoader", "Dataset", "DatasetInfo", "load_dataset", "describe_datasets",
    "get_dataset_info", "default_data_dir", "augment", "random_shift", "random_hflip",
    "DatasetError", "DataFormatError", "MissingFilesError", "ChecksumError",
    "MissingDependencyError", "load_image_folder", "scan_image_folder", "ImageFolder",
]
