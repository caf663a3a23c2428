"""effnet's built-in plugins (installed as ``effnet.plugins``).

Each module here uses only effnet's public API and registers through the same hooks a
third-party package would. :data:`BUILTIN` is the list the registry loads first.
"""

BUILTIN = [
    "effnet.plugins.loggers",
    "effnet.plugins.trackers",
    "effnet.plugins.backends",
    "effnet.plugins.optimizers",
    "effnet.plugins.schedules",
    "effnet.plugins.progressive",
    "effnet.plugins.data",
    "effnet.plugins.augment",
    "effnet.plugins.models",
    "effnet.plugins.callbacks",
]
