"""The ``effnet`` command line (installed as ``effnet.cli``)."""
