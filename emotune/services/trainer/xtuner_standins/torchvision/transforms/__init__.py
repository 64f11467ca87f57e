"""Stand-in ``torchvision.transforms``: importable (XTuner's InternVL dataset imports it), unusable."""


def __getattr__(name: str):
    raise AttributeError(f"torchvision.transforms.{name} is unavailable in the CPU XTuner venv (stand-in)")
