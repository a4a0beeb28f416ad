"""HRMNet network, its ResNet-18-D backbone and the authors' training loss."""
from .backbone import ResNet18D, load_timm_resnet18d
from .hrmnet import HRMNet
from .loss import dice, hrmnet_loss

__all__ = ["HRMNet", "ResNet18D", "dice", "hrmnet_loss", "load_timm_resnet18d"]
