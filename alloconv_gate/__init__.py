"""alloconv_gate: sell access to parts of any WSGI site with AlloConv micropayment codes."""

from .config import ConfigError, GateConfig
from .middleware import Gate

__all__ = ["ConfigError", "Gate", "GateConfig"]
__version__ = "0.1.0"
