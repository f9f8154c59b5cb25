"""IoU-aware classification (BCE against the IoU of each cell's own box) plus GIoU (and optional L1) box losses.

The score target of a positive cell is the IoU between the box that cell predicts and the ground truth
(detached), 0 elsewhere: the classifier learns to rank cells by box quality, which is what the tracker's
argmax needs. The authors' criterion (`box_with_score_map`): BCE summed over all cells / number of
positives, GIoU on the positives / number of positives, weights 1 and 1, positives = every cell the
rasterised box covers; under DDP the number of positives is averaged over the ranks (`reduce_mean_`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossOptions


def box_iou_giou(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and GIoU of xyxy boxes (..., 4)."""
    area_p = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0)
    area_g = (gt[..., 2] - gt[..., 0]).clamp(min=0) * (gt[..., 3] - gt[..., 1]).clamp(min=0)
    lt = torch.maximum(pred[..., :2], gt[..., :2])
    rb = torch.minimum(pred[..., 2:], gt[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_p + area_g - inter
    iou = inter / (union + eps)
    hull = (torch.maximum(pred[..., 2:], gt[..., 2:]) - torch.minimum(pred[..., :2], gt[..., :2])).clamp(min=0)
    hull_area = hull.prod(-1)
    giou = iou - (hull_area - union) / (hull_area + eps)
    return iou, giou


def positive_cells(gt: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool: cells whose centre lies inside the GT box, plus the cell holding the GT centre."""
    h, w = grid
    cy = (torch.arange(h, dtype=gt.dtype, device=gt.device) + 0.5) / h
    cx = (torch.arange(w, dtype=gt.dtype, device=gt.device) + 0.5) / w
    x1, y1, x2, y2 = (gt[:, i].view(-1, 1, 1) for i in range(4))
    inside = (cx.view(1, 1, w) > x1) & (cx.view(1, 1, w) < x2) & (cy.view(1, h, 1) > y1) & (cy.view(1, h, 1) < y2)
    centre = (gt[:, :2] + gt[:, 2:]) / 2
    ci = (centre[:, 0] * w).floor().long().clamp(0, w - 1)
    cj = (centre[:, 1] * h).floor().long().clamp(0, h - 1)
    inside[torch.arange(len(gt), device=gt.device), cj, ci] = True
    return inside


def rasterized_cells(gt: torch.Tensor, grid: tuple[int, int], eps: float = 1e-4) -> torch.Tensor:
    """(B, H, W) bool: every cell the box covers (positive_sample_assignment: floor(x1), floor(x2 + 1 - eps),
    end-exclusive, on the box scaled to the response map)."""
    h, w = grid
    scale = gt.new_tensor([w, h, w, h])
    cells = gt * scale
    cells = torch.cat([cells[:, :2].floor(), (cells[:, 2:] + 1 - eps).floor()], dim=1)
    cells = torch.minimum(cells.clamp(min=0), scale)
    ys = torch.arange(h, dtype=gt.dtype, device=gt.device).view(1, h, 1)
    xs = torch.arange(w, dtype=gt.dtype, device=gt.device).view(1, 1, w)
    x1, y1, x2, y2 = (cells[:, i].view(-1, 1, 1) for i in range(4))
    return (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)


def positives(gt: torch.Tensor, grid: tuple[int, int], weights: LossOptions) -> torch.Tensor:
    return rasterized_cells(gt, grid) if weights.positives == "rasterized" else positive_cells(gt, grid)


def tracking_loss(score_map: torch.Tensor, boxes: torch.Tensor, gt: torch.Tensor, weights: LossOptions,
                  num_pos: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """score_map (B,H,W) logits, boxes (B,H,W,4) normalised xyxy, gt (B,4) normalised xyxy.

    `num_pos`: the normaliser when it is not this batch's own count of positives: the mean count over the
    DDP ranks (the authors' `reduce_mean_`) and over accumulation micro-steps, so that N ranks equal one
    process accumulating N micro-steps.
    """
    score_map, boxes, gt = score_map.float(), boxes.float(), gt.float()
    b, h, w = score_map.shape
    pos = positives(gt, (h, w), weights)
    num_pos = (pos.sum().float() if num_pos is None else num_pos.to(score_map.device).float()).clamp(min=1)
    iou, giou = box_iou_giou(boxes, gt.view(b, 1, 1, 4).expand_as(boxes))
    target = torch.where(pos, iou.detach().clamp(min=0), torch.zeros_like(iou))
    cls = F.binary_cross_entropy_with_logits(score_map, target, reduction="sum") / num_pos
    giou_loss = ((1 - giou) * pos).sum() / num_pos
    l1 = ((boxes - gt.view(b, 1, 1, 4)).abs().sum(-1) * pos).sum() / num_pos
    total = weights.cls * cls + weights.giou * giou_loss + (weights.l1 * l1 if weights.l1 else 0.0)
    mean_iou = (iou.detach() * pos).sum() / pos.sum().clamp(min=1)
    return {"loss": total, "cls": cls.detach(), "giou": giou_loss.detach(), "l1": l1.detach(), "iou": mean_iou}
