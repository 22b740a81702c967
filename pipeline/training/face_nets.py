"""Backbones made for 48-pixel faces, registered in timm's model registry.

timm's ImageNet-shaped networks divide the input by 4 in the stem, so a 48 px face is 12×12 before
the first block; CIFAR-sized images show the same handicap (Zagoruyko & Komodakis 2016 and the CIFAR
ResNets keep the stem at stride 1). The nets here keep resolution early instead:

- ``face_resnet*``: timm's ResNet with a 3×3 stride-1 stem and no max-pool (the CIFAR ResNet layout,
  which the ≈73% from-scratch FER-2013 ResNet-18s use); ``_s2`` variants use a stride-2 stem.
- ``face_vgg*``: stages of two 3×3 conv-BN-ReLU and a max-pool, like the VGG-style net of
  Khaireddin & Chen 2021 (73.3% on FER-2013 from scratch); ``face_vgg_wide`` is their width.
- ``face_xception``: the mini-Xception class (Arriaga et al. 2017, ≈60k parameters, 66% on FER-2013):
  residual modules of depthwise-separable convolutions.

Importing this module registers them, so ``timm.create_model("face_resnet10")``, ``backbones:
{face_resnet10: {}}`` in params.yaml, the bundle and the ONNX export all build them by name. Every
net follows timm's classifier interface (``num_classes``, ``in_chans``, ``drop_rate``,
``forward_features``/``forward_head``, ``reset_classifier``), so the class and target outputs and an
``pretrained`` (a local file) work as for any timm model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

FACE_MEAN, FACE_STD = (
    (0.5, 0.5, 0.5),
    (0.25, 0.25, 0.25),
)  # informational: the pipeline normalises with the data's own statistics


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 7,
        "input_size": (3, 48, 48),
        "pool_size": (6, 6),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": FACE_MEAN,
        "std": FACE_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "face_resnet10": _cfg(),
        "face_resnet10_s2": _cfg(pool_size=(3, 3)),
        "face_resnet18": _cfg(),
        "face_resnet18_s2": _cfg(pool_size=(3, 3)),
        "face_vgg": _cfg(pool_size=(3, 3), first_conv="stages.0.0.conv", classifier="head.fc"),
        "face_vgg_wide": _cfg(pool_size=(3, 3), first_conv="stages.0.0.conv", classifier="head.fc"),
        "face_xception": _cfg(pool_size=(3, 3), first_conv="stem.0.conv", classifier="head.fc"),
    }
)


class FaceResNet(ResNet):
    """timm's ResNet whose stem is one 3×3 convolution at `stem_stride`, without the max-pool."""

    def __init__(self, *, stem_stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        in_chans, stem_width = self.conv1.in_channels, self.conv1.out_channels
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.maxpool = nn.Identity()
        # the stride-32 bookkeeping of the ImageNet stem no longer holds: report what the stages do
        reduction = stem_stride
        for info in self.feature_info:
            if info["module"].startswith("layer"):
                reduction *= 1 if info["module"] == "layer1" else 2
                info["reduction"] = reduction
            else:
                info["reduction"] = stem_stride


class ConvBnAct(nn.Sequential):
    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()


class SeparableConvBn(nn.Sequential):
    """Depthwise 3×3 then pointwise 1×1, batch-normalised: the Xception unit."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_chans, in_chans, 3, 1, 1, groups=in_chans, bias=False)
        self.pointwise = nn.Conv2d(in_chans, out_chans, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)


class Subsample(nn.Module):
    """Every second row and column: what a stride-2 1×1 convolution reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::2, ::2]


class XceptionModule(nn.Module):
    """Two separable convolutions and a stride-2 max-pool, beside a strided 1×1 shortcut."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        # Subsampling before a stride-1 1×1 convolution computes the same as a stride-2 one, and avoids a
        # crash of PyTorch 2.14's CPU backward for the strided 1×1 conv in channels-last at 8→16 channels, 48 px.
        self.shortcut = nn.Sequential(Subsample(), ConvBnAct(in_chans, out_chans, kernel_size=1, act=False))
        self.body = nn.Sequential(
            SeparableConvBn(in_chans, out_chans),
            nn.ReLU(inplace=True),
            SeparableConvBn(out_chans, out_chans),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ClassifierHead(nn.Module):
    def __init__(self, num_features: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)


class FaceConvNet(nn.Module):
    """A stem, a sequence of stages and a pooled linear head, with timm's classifier interface."""

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[nn.Module],
        num_features: int,
        num_classes: int,
        drop_rate: float,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if drop_path_rate:
            raise TypeError(
                f"drop_path_rate={drop_path_rate}: this net has no residual branches to drop; set it to 0 or null"
            )
        self.num_classes, self.num_features, self.drop_rate = num_classes, num_features, drop_rate
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(num_features, num_classes, drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, self.drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def vgg_net(
    widths: Sequence[int], in_chans: int = 1, num_classes: int = 7, drop_rate: float = 0.0, **kwargs
) -> FaceConvNet:
    """Stages of two 3×3 conv-BN-ReLU and a 2×2 max-pool: 48 px → 3 px after four stages."""
    stages, chans = [], in_chans
    for width in widths:
        stages.append(nn.Sequential(ConvBnAct(chans, width), ConvBnAct(width, width), nn.MaxPool2d(2)))
        chans = width
    return FaceConvNet(nn.Identity(), stages, chans, num_classes, drop_rate, **kwargs)


def xception_net(
    stem_width: int, widths: Sequence[int], in_chans: int = 1, num_classes: int = 7, drop_rate: float = 0.0, **kwargs
) -> FaceConvNet:
    stem = nn.Sequential(ConvBnAct(in_chans, stem_width), ConvBnAct(stem_width, stem_width))
    stages, chans = [], stem_width
    for width in widths:
        stages.append(XceptionModule(chans, width))
        chans = width
    return FaceConvNet(stem, stages, chans, num_classes, drop_rate, **kwargs)


def _face_resnet(variant: str, pretrained: bool, **kwargs) -> ResNet:
    return build_model_with_cfg(FaceResNet, variant, pretrained, **kwargs)


def _face_convnet(builder, variant: str, pretrained: bool, **kwargs) -> FaceConvNet:
    return build_model_with_cfg(builder, variant, pretrained, feature_cfg={"flatten_sequential": True}, **kwargs)


@register_model
def face_resnet10(pretrained: bool = False, **kwargs) -> ResNet:
    """One basic block per stage at widths 32–256, stride-1 stem: stages at 48, 24, 12 and 6 px."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32, stem_stride=1)
    return _face_resnet("face_resnet10", pretrained, **dict(args, **kwargs))


@register_model
def face_resnet10_s2(pretrained: bool = False, **kwargs) -> ResNet:
    """face_resnet10 with a stride-2 stem: stages at 24, 12, 6 and 3 px, a quarter of the work."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(64, 128, 256, 512), stem_width=64, stem_stride=2)
    return _face_resnet("face_resnet10_s2", pretrained, **dict(args, **kwargs))


@register_model
def face_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 with the CIFAR stem (3×3, stride 1, no max-pool): the ≈73% FER-2013 layout; GPU-sized."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=64, stem_stride=1)
    return _face_resnet("face_resnet18", pretrained, **dict(args, **kwargs))


@register_model
def face_resnet18_s2(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 with a 3×3 stride-2 stem and no max-pool: stages at 24, 12, 6 and 3 px."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=64, stem_stride=2)
    return _face_resnet("face_resnet18_s2", pretrained, **dict(args, **kwargs))


@register_model
def face_vgg(pretrained: bool = False, **kwargs) -> FaceConvNet:
    """VGG-style at half the anchor's width (32–256), for CPU budgets."""
    return _face_convnet(vgg_net, "face_vgg", pretrained, **dict({"widths": (32, 64, 128, 256)}, **kwargs))


@register_model
def face_vgg_wide(pretrained: bool = False, **kwargs) -> FaceConvNet:
    """VGG-style at the width of Khaireddin & Chen's net (64–512)."""
    return _face_convnet(vgg_net, "face_vgg_wide", pretrained, **dict({"widths": (64, 128, 256, 512)}, **kwargs))


@register_model
def face_xception(pretrained: bool = False, **kwargs) -> FaceConvNet:
    """mini-Xception: an 8-wide stem and four separable modules of 16–128 channels."""
    args = {"stem_width": 8, "widths": (16, 32, 64, 128)}
    return _face_convnet(xception_net, "face_xception", pretrained, **dict(args, **kwargs))
