"""calib: trustworthy confidence from language models, in JAX."""

from calib.errors import CalibError

__all__ = ["CalibError"]
__version__ = "0.1.0"
