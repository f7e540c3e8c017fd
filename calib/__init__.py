"""calib: trustworthy confidence from language models, in JAX."""

from calib.cache import configure
from calib.errors import CalibError

__all__ = ["CalibError", "configure"]
__version__ = "0.1.0"
