"""Stand-in ``torchvision.transforms.functional``: only the enum XTuner imports at module load."""

from enum import Enum


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def __getattr__(name: str):
    raise AttributeError(f"torchvision.transforms.functional.{name} is unavailable in the CPU XTuner venv (stand-in)")
