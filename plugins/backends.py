"""Built-in distribution backend: ``single`` (one process, one replica)."""

import effnet
from effnet.distribute import SingleProcess


@effnet.hookimpl
def effnet_backends():
    return {"single": SingleProcess}
