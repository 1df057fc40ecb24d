"""segment: dense per-pixel outputs (segmentation masks, saliency or probability maps),
judged by the masks their user draws from them.

The answer output is [N, C, H, W] (or [N, H, W]). With one channel the mask is the pixels
above the declared threshold (MaskSettings: 0.5 for a sigmoid's probabilities, 0 for
logits); with C > 1 channels it is each pixel's best class. An artifact is judged by the
IoU of its masks with PyTorch's over all the judged images (intersections and unions
summed, as segmentation benchmarks pool them; with classes, each class's, averaged over
the classes: mIoU), and reports the mean of each image's IoU and the share of pixels that
agree.

Pooled, not averaged per image: a photo with next to no object (a few hundred pixels)
makes its own IoU 0 or 1 on a few stray pixels, as PyTorch's own mask does under 1/255 of
input noise or a one-pixel shift (U^2-Net-p: per-image mean 0.98 and 0.90 against itself),
so a per-image mean floor would judge those pixels, not the artifact. The per-image mean is
reported beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..intervals import group_bootstrap, group_index, mean_interval, ratio_interval
from ..manifest import MaskSettings, Postprocessing, TaskMetric, TensorSpec
from ..task_fidelity import Floors, agreement_metric, group_count
from .base import Ask, Outputs, Task, rms_errors

if TYPE_CHECKING:
    from ..postprocess import Prediction


def _threshold(post: Optional[Postprocessing]) -> float:
    return (post.mask if post is not None and post.mask is not None else MaskSettings()).threshold


def masks(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per-sample masks of stacked maps ([N, C, H, W], [N, H, W], or with the model's batch
    axis kept, [N, 1, C, H, W]): booleans above `threshold` for one channel, the best class
    index for several ([N, H, W] either way)."""
    maps = values.reshape(len(values), -1, *values.shape[-2:])  # [N, C, H, W]
    if maps.shape[1] > 1:
        labels: np.ndarray = maps.argmax(axis=1)
        return labels
    above: np.ndarray = maps[:, 0] > threshold
    return above


def overlaps(a: np.ndarray, b: np.ndarray, classes: int) -> np.ndarray:
    """[classes, 2]: each class's (intersection, union) of two masks in pixels; for
    booleans one class, the foreground."""
    if a.dtype == np.bool_:
        return np.array([[np.count_nonzero(a & b), np.count_nonzero(a | b)]], np.float64)
    counts = np.zeros((classes, 2), np.float64)
    both = np.bincount(a[a == b].ravel(), minlength=classes)[:classes]
    either = (np.bincount(a.ravel(), minlength=classes)[:classes] + np.bincount(b.ravel(), minlength=classes)[:classes]
              - both)
    counts[:, 0], counts[:, 1] = both, either
    return counts


def pooled_iou(counts: np.ndarray) -> float:
    """The IoU of each class over all images (intersections and unions summed), averaged
    over the classes either side shows (mIoU); 1 when no image shows any."""
    inter, union = counts.sum(axis=0).T
    shown = union > 0
    return float((inter[shown] / union[shown]).mean()) if shown.any() else 1.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks: of the foreground for booleans, else the mean over the classes
    either mask shows. Two empty masks agree fully."""
    if a.dtype == np.bool_:
        union = int(np.count_nonzero(a | b))
        return float(np.count_nonzero(a & b)) / union if union else 1.0
    ious = [np.count_nonzero((a == c) & (b == c)) / np.count_nonzero((a == c) | (b == c))
            for c in np.union1d(np.unique(a), np.unique(b))]
    return float(np.mean(ious))


class Segment(Task):
    """Mask IoU with PyTorch (the floor) and pixel agreement (reported). Candidates are
    ranked by the RMS error of the map in units of the maps' spread of values, as
    classifiers are by their logits: the noise everywhere moves the pixels near the
    threshold on the next images, the masks of the samples that choose do not show it."""

    name = "segment"
    answer_kind = "mask"
    draws = True
    settings_field = "mask"
    help = "dense maps [N, C, H, W]: judged by mask IoU (threshold, or each pixel's best class)"

    def floor(self, metric: str, floors: Floors) -> Optional[float]:
        return floors.min_iou if metric == "mask_iou" else None

    def metrics(self, outputs: Outputs, reference: Outputs, floors: Floors, post: Optional[Postprocessing] = None,
                groups: Optional[np.ndarray] = None) -> tuple[TaskMetric, ...]:
        main, threshold = self.main(post, reference), _threshold(post)
        mine, theirs = masks(outputs[main], threshold), masks(reference[main], threshold)
        classes = int(reference[main].reshape(len(mine), -1, *mine.shape[-2:]).shape[1])
        counts = np.stack([overlaps(a, b, classes) for a, b in zip(mine, theirs)])  # [N, classes, 2]
        n, units = len(counts), group_count(groups, len(counts))
        if counts.shape[1] == 1:  # one mask: a ratio whose unit is the group of images
            index = group_index(groups, n)
            low, high = ratio_interval(*(np.bincount(index, weights=counts[:, 0, k]) for k in (0, 1)))
        else:  # the mean of per-class ratios: resampled by group
            low, high = group_bootstrap(lambda pick: pooled_iou(counts[pick]), groups, n)
        per_image = np.array([mask_iou(a, b) for a, b in zip(mine, theirs)], np.float64)
        per_low, per_high = mean_interval(per_image, groups)
        pixels = (mine == theirs).reshape(n, -1).mean(axis=1)
        return (
            TaskMetric("mask_iou", pooled_iou(counts), low, high, samples=n, floor=self.floor("mask_iou", floors),
                       groups=units),
            TaskMetric("mask_iou_per_image", float(per_image.mean()), per_low, per_high, samples=n, groups=units),
            agreement_metric("pixel_agreement", pixels, groups, None),
        )

    def sample_errors(self, outputs: Outputs, reference: Outputs, post: Optional[Postprocessing] = None
                      ) -> np.ndarray:
        main = self.main(post, reference)
        rms, ref = rms_errors(outputs[main], reference[main])
        # One spread for all samples, not each sample's: a photo with no salient object has a
        # flat map, whose own spread would blow its error up and let it decide the ranking
        # (U^2-Net-p: errors of 15-63 on such views where the others were near 1).
        errors: np.ndarray = rms / max(float(ref.std()), 1e-12)
        return errors

    def output_problem(self, outputs: Sequence[TensorSpec]) -> Optional[str]:
        shape = outputs[0].shape
        if len(shape) in (3, 4) and min(shape[-2:]) > 1:
            return None
        return (f"--task segment needs a dense first output [N, C, H, W] or [N, H, W]; this model's first output "
                f"is {list(shape)}")

    def default_answer(self, outputs: Sequence[TensorSpec], threshold: Optional[float]) -> Optional[Postprocessing]:
        settings = MaskSettings() if threshold is None else MaskSettings(threshold=threshold)
        return Postprocessing(output=outputs[0].name, kind=self.answer_kind or "", mask=settings)

    def answer(self, post: Postprocessing, outputs: dict[str, np.ndarray], labels: Optional[Sequence[str]],
               ask: Ask) -> "Prediction":
        from ..postprocess import Prediction

        mask = masks(outputs[post.output][:1], _threshold(post))[0]
        if ask.geometry is not None and ask.input_hw is not None:
            mask = to_original(mask, ask)
        return Prediction(outputs=outputs, mask=mask)


def to_original(mask: np.ndarray, ask: Ask) -> np.ndarray:
    """A mask over the model's output grid → over the original image's pixels (nearest):
    each original pixel centre through the preprocessing's geometry into the input, then
    onto the output grid (which may be coarser than the input)."""
    geometry, (in_h, in_w) = ask.geometry, ask.input_hw or (0, 0)
    assert geometry is not None
    out_h, out_w = mask.shape
    xs = ((np.arange(geometry.width) + 0.5) * geometry.scale_x + geometry.pad_left) * (out_w / in_w)
    ys = ((np.arange(geometry.height) + 0.5) * geometry.scale_y + geometry.pad_top) * (out_h / in_h)
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    original: np.ndarray = mask[np.ix_(rows.clip(0, out_h - 1), cols.clip(0, out_w - 1))]
    # Pixels a centre crop cut away were never seen: no object there (background, False).
    seen = ((rows >= 0) & (rows < out_h))[:, None] & ((cols >= 0) & (cols < out_w))[None, :]
    return np.where(seen, original, np.zeros((), original.dtype))
