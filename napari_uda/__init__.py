"""napari-uda: unsupervised domain adaptation of abdominal organ segmentation from CT to MRI and PET."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-uda")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
