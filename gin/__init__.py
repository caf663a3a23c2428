"""effnet's experiment files (installed as package data under ``effnet/gin``)."""
