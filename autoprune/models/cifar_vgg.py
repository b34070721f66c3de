"""VGG-style plain networks for 32×32 inputs (conv-BN-ReLU stacks, max-pooling, one linear head):
the family where every layer's width is free, unlike residual stages."""

from __future__ import annotations

from torch import nn

from autoprune.models._entry import ModelEntry

CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    def __init__(self, depth: int = 11, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = max(8, int(int(v) * width))
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


vgg11 = ModelEntry(CifarVGG, kwargs=(("depth", 11),))
vgg16 = ModelEntry(CifarVGG, kwargs=(("depth", 16),))
vgg11_s = ModelEntry(CifarVGG, kwargs=(("depth", 11), ("width", 0.125)))  # 1/8 width, quick

__all__ = ["CONFIGS", "CifarVGG", "vgg11", "vgg11_s", "vgg16"]
