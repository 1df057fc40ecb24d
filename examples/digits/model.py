"""A small CNN for scikit-learn's 8x8 handwritten digits (the model `make demo` builds)."""

import torch
from torch import nn

INPUT_SHAPE = (1, 1, 8, 8)
CLASSES = 10


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, CLASSES))

    def forward(self, image):
        return self.classifier(self.features(image))


def create() -> nn.Module:
    """The factory `edgepack build examples/digits/model.py:create` calls."""
    return DigitsCNN()


def example_inputs() -> dict:
    """Input names and shapes for the export (so `--input` is optional)."""
    return {"image": torch.zeros(INPUT_SHAPE)}
