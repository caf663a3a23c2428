"""Turning errors raised while a tf.data pipeline runs into one-line :class:`UserError`s.

The pipeline's own checks (undecodable records, labels out of range) raise
``InvalidArgumentError`` whose message carries :data:`MARK` followed by the user-facing text;
:func:`translate_error` extracts it. Errors from TensorFlow itself get a message that says
what kind of data problem it was and what to do.
"""

from __future__ import annotations

import contextlib

from effnet.errors import UserError
from effnet.native import tf_error_text

MARK = "EFFNET_DATA_ERROR: "




def translate_error(exc: BaseException) -> UserError | None:
    """A one-line UserError for a data problem found while iterating a dataset, else None."""
    if isinstance(exc, UserError):
        return exc
    text = str(exc)
    if MARK in text:
        message = text.split(MARK, 1)[1]
        message = message.split("]\n", 1)[0].split("\n", 1)[0].rstrip("]").strip()
        # tf.debugging.Assert prints strings escaped, like a C literal.
        message = message.replace("\\'", "'").replace('\\"', '"').replace("\\\\", "\\")
        return UserError(message)
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, tf.errors.OpError):
        return None
    detail = tf_error_text(text)
    if isinstance(exc, tf.errors.DataLossError) or "truncated record" in text or "corrupted record" in text:
        return UserError(
            f"a TFRecord file of the dataset is truncated or corrupt ({detail}); `effnet data stats DATA_DIR` names "
            f"the file; re-create it, or set input_pipeline.on_error='skip'"
        )
    if any(s in text for s in ("jpeg::Uncompress", "Unknown image file format", "Invalid PNG", "Invalid JPEG", "decode")):
        return UserError(
            f"an image in the dataset could not be decoded ({detail}); `effnet data stats --check DATA_DIR` lists "
            f"the bad records; remove them or set input_pipeline.on_error='skip'"
        )
    if isinstance(exc, tf.errors.NotFoundError):
        return UserError(f"a dataset file disappeared while reading ({detail}); check the data folder and rerun")
    if isinstance(exc, tf.errors.PermissionDeniedError):
        return UserError(f"a dataset file cannot be read ({detail}); fix its permissions")
    return None


@contextlib.contextmanager
def translated():
    """Re-raise an error met while iterating data as a one-line UserError when it is the data's fault."""
    try:
        yield
    except Exception as exc:
        try:
            error = translate_error(exc)
        except Exception:  # noqa: BLE001 - translation must never hide the original error
            error = None
        if error is None:
            raise
        raise error from None


__all__ = ["MARK", "translate_error", "translated"]
