"""dcgan: train DCGANs with PyTorch, the tutorial's algorithm with everything around it."""

__version__ = "0.1.0"

from .config import ModelConfig, TrainConfig  # noqa: E402
from .errors import DcganError  # noqa: E402
from .models import Discriminator, Generator  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = ["DcganError", "Discriminator", "Generator", "ModelConfig", "TrainConfig", "Trainer", "__version__"]
