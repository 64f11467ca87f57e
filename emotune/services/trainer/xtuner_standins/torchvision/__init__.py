"""Stand-in for torchvision in the CPU XTuner virtualenv only.

XTuner imports torchvision at module load (for its LLaVA image pipeline, unused by text fine-tuning), and PyPI's
torchvision wheel fails to import beside the CPU torch. Using any of it fails (AttributeError), so a text job
can never silently depend on it. GPU images install the real torchvision.
"""

__version__ = "0.0.0+emotune.standin"


def __getattr__(name: str):
    raise AttributeError(f"torchvision.{name} is unavailable: this CPU XTuner venv has a stand-in (text only)")
