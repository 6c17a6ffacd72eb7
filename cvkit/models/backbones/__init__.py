"""Backbones built from torchvision classifiers, each exposing multi-scale feature maps (see ``base``)."""

from cvkit.models.backbones.base import Backbone, L2Norm
from cvkit.models.backbones.densenet import densenet121
from cvkit.models.backbones.extras import SSDExtras
from cvkit.models.backbones.resnet import resnet18, resnet34, resnet50
from cvkit.models.backbones.vgg import vgg16, vgg16_bn

__all__ = [
    "Backbone",
    "L2Norm",
    "SSDExtras",
    "vgg16",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
]
