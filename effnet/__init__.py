"""effnet: train, evaluate and serve EfficientNet V1/V2 classifiers on TensorFlow 2 / Keras 3.

The engine lives here; built-in plugins in ``effnet.plugins``; experiments in ``effnet/gin``;
the command line in ``effnet.cli``. Importing ``effnet`` does not import TensorFlow.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins: ``@effnet.hookimpl def effnet_models(): ...``
hookimpl = pluggy.HookimplMarker("effnet")

from effnet.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__", "hookimpl"]
