"""encoder-clean: audit and clean pre-trained self-supervised image encoders of backdoors.

The Python API (`encoder_clean.api`, re-exported here) runs what the CLI commands run::

    import encoder_clean as ec

    result = ec.pretrain("builtin:shapes", ec.PretrainConfig(epochs=1))
    result.save("clean.safetensors")
"""

__version__ = "0.1.0"

# The subpackages that share a name with an API function are imported first, so that the function,
# bound after them, is what `encoder_clean.scan` (etc.) names; the subpackages stay importable by their
# full names (`from encoder_clean.scan.invert import ...`).
from encoder_clean import distill as _distill, evaluate as _evaluate, pretrain as _pretrain  # noqa: E402,F401
from encoder_clean import scan as _scan  # noqa: E402,F401
from encoder_clean.api import *  # noqa: E402,F401,F403  (the names in encoder_clean.api.__all__)
from encoder_clean.api import __all__  # noqa: E402,F401
