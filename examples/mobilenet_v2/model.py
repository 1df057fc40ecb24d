"""MobileNetV2 (Sandler et al., 2018) written out in plain PyTorch, no torchvision.

The architecture and its module names match torchvision's `mobilenet_v2` (3.5 M
parameters, ~300 M MACs at 224x224), so torchvision's ImageNet state_dict loads as it
is: `prepare.py` fetches it and real photos (see README.md in this folder).

    python examples/mobilenet_v2/prepare.py examples/mobilenet_v2/artifacts
    edgepack build examples/mobilenet_v2/model.py:create --target host \
        --weights examples/mobilenet_v2/artifacts/mobilenet_v2-b0353104.pth \
        --calibration examples/mobilenet_v2/artifacts/calib.npz \
        --eval examples/mobilenet_v2/artifacts/eval.npz -o dist/mnv2-host

Without --weights the network is randomly initialised: its outputs are near zero and
say nothing about accuracy (fine for build times and sizes only).
"""

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 224, 224)
# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers = [conv_bn_relu6(cin, hidden, kernel=1)] if expansion != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)  # torchvision's name

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, image):
        x = self.features(image)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def create() -> nn.Module:
    torch.manual_seed(0)  # reproducible random weights until --weights replaces them
    return MobileNetV2()


def example_inputs() -> dict:
    return {"image": torch.zeros(INPUT_SHAPE)}
