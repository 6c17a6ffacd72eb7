"""Classification models: the d2l classics as one :class:`Classifier` interface, and their builder.

    from cvkit.models.classification import ClassifierConfig, build_classifier
    model = build_classifier(ClassifierConfig(name="resnet18"), num_classes=10, image_size=(28, 28),
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    logits = model(images)  # uint8 (B, 3, 28, 28) -> (B, 10): the model normalizes them first

``MODELS`` is a plain dict name -> builder function (see :mod:`cvkit.models.classification.zoo`).
"""

from cvkit.models.classification.build import MODELS, build_classifier, read_pretrained, uses_small_input
from cvkit.models.classification.config import ClassifierConfig
from cvkit.models.classification.zoo import Classifier

__all__ = ["MODELS", "Classifier", "ClassifierConfig", "build_classifier", "read_pretrained", "uses_small_input"]
