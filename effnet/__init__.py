"""effnet: train, evaluate and serve EfficientNet V1/V2 classifiers on TensorFlow 2 / Keras 3.

The engine lives here; built-in plugins in ``effnet.plugins``; experiments in ``effnet/gin``;
the command line in ``effnet.cli``. The public Python API mirrors the CLI::

    effnet.train(gin_files=["quickstart"], model_dir="runs/quickstart")
    effnet.evaluate("runs/quickstart"); effnet.predict("runs/quickstart", ["photos/"])
    effnet.export("runs/quickstart"); run = effnet.load_run("runs/quickstart")

(see :mod:`effnet.api`). Importing ``effnet`` does not import TensorFlow; calling the API does.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins: ``@effnet.hookimpl def effnet_models(): ...``
hookimpl = pluggy.HookimplMarker("effnet")

from effnet.errors import UserError  # noqa: E402

_API = ("train", "evaluate", "predict", "export", "benchmark", "load_run", "configure")


def __getattr__(name: str):
    # The API loads on first use, so plugins can `import effnet` for `hookimpl` without pulling in the engine.
    if name in _API:
        from effnet import api

        return getattr(api, name)
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


__all__ = ["UserError", "__version__", "hookimpl", *_API]
