"""encoder-clean: audit and clean pre-trained self-supervised image encoders of backdoors.

The Python API (`encoder_clean.api`, re-exported here) runs what the CLI commands run::

    import encoder_clean as ec

    result = ec.pretrain("builtin:shapes", ec.PretrainConfig(epochs=1))
    result.save("clean.safetensors")
"""

__version__ = "0.1.0"

import importlib  # noqa: E402
import types  # noqa: E402

from encoder_clean import api  # noqa: E402
from encoder_clean.api import *  # noqa: E402,F401,F403  (the names in encoder_clean.api.__all__)
from encoder_clean.api import __all__  # noqa: E402,F401


class _CallablePackage(types.ModuleType):
    """A subpackage that is also the API function of its name: `encoder_clean.scan(...)` runs
    `encoder_clean.api.scan`, while `import encoder_clean.scan.report` and the like import as usual."""

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)


# `distill`, `evaluate`, `pretrain` and `scan` name both a subpackage and an API function. Binding the
# function in their place would break `import encoder_clean.scan.report as report` (Python resolves the
# dotted name through the attribute); instead each subpackage becomes callable as the function.
for _name in ("distill", "evaluate", "pretrain", "scan"):
    _package = importlib.import_module(f"{__name__}.{_name}")
    _package.__class__ = _CallablePackage
    _package.__wrapped__ = getattr(api, _name)  # inspect.signature(encoder_clean.scan) follows it
    globals()[_name] = _package
del _name, _package
