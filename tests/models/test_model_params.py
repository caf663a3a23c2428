"""Parameter counts of the full-size variants: equal to keras.applications', or to the published figures.

Models are built inside ``keras.StatelessScope(initialize_variables=False)``: Keras then creates
every variable with its shape but defers drawing its initial values, which is what makes building
480M-parameter models affordable here; counts depend only on shapes.

keras.applications' V1 models carry 7 extra weights (mean, variance and count of their input
Normalization layer); ours normalise with constants, so the comparison subtracts exactly the
weights of Keras' Normalization layers.
"""

import math

import keras
import pytest

from effnet.plugins.models import efficientnet
from effnet.plugins.models.specs import VARIANTS

KERAS_VARIANTS = [name for name, spec in VARIANTS.items() if spec.keras_application]
PUBLISHED = [name for name, spec in VARIANTS.items() if spec.published_params]


def _size(weights):
    return sum(math.prod(w.shape) for w in weights)


def _shapes_only():
    return keras.StatelessScope(initialize_variables=False)


def test_v2_s_has_the_published_keras_count():
    with _shapes_only():
        assert efficientnet("efficientnet_v2_s", num_classes=1000).count_params() == 21_612_360


@pytest.mark.parametrize("variant", KERAS_VARIANTS)
def test_count_equals_keras_applications(variant):
    with _shapes_only():
        ours = efficientnet(variant, num_classes=1000).count_params()
        reference = getattr(keras.applications, VARIANTS[variant].keras_application)(weights=None)
    normalization = _size(w for layer in reference.layers if isinstance(layer, keras.layers.Normalization) for w in layer.weights)
    print(f"{variant}: ours {ours:,}, keras {reference.count_params():,} (incl. {normalization} normalization statistics)")
    assert ours == reference.count_params() - normalization


@pytest.mark.parametrize("variant", PUBLISHED)
def test_count_matches_the_published_figure(variant):
    """Published sizes count trainable weights (not BN moving statistics), in millions."""
    value, source = VARIANTS[variant].published_params
    with _shapes_only():
        trainable = _size(efficientnet(variant, num_classes=1000).trainable_weights)
    print(f"{variant}: {trainable:,} trainable; published {value}M ({source})")
    decimals = 0 if float(value).is_integer() else len(str(value).split(".")[1])
    assert round(trainable / 1e6, decimals) == value
