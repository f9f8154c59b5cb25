"""A line-by-line transcription of the authors' tracker (MCG-NJU/MixFormerV2 at commit 1041438), the
reference our pipeline and engine are compared against: MixFormerOnline.track with the full forward
(online_size 1), processing_utils.sample_target with cv2.copyMakeBorder, box_ops.clip_box."""

from __future__ import annotations

import math

import cv2
import torch

from lorat_infer.mixformer import MixFormerV2, TrackerParams
from lorat_infer.mixformer.crop import to_input


def authors_sample_target(im, target_bb, search_area_factor, output_sz):
    """processing_utils.sample_target at commit 1041438 (mask handling dropped)."""
    x, y, w, h = target_bb
    crop_sz = math.ceil(math.sqrt(w * h) * search_area_factor)
    x1 = int(round(x + 0.5 * w - crop_sz * 0.5))
    x2 = int(x1 + crop_sz)
    y1 = int(round(y + 0.5 * h - crop_sz * 0.5))
    y2 = int(y1 + crop_sz)
    x1_pad = int(max(0, -x1))
    x2_pad = int(max(x2 - im.shape[1] + 1, 0))
    y1_pad = int(max(0, -y1))
    y2_pad = int(max(y2 - im.shape[0] + 1, 0))
    im_crop = im[y1 + y1_pad:y2 - y2_pad, x1 + x1_pad:x2 - x2_pad, :]
    im_crop_padded = cv2.copyMakeBorder(im_crop, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
    resize_factor = output_sz / crop_sz
    return cv2.resize(im_crop_padded, (output_sz, output_sz)), resize_factor


def authors_clip_box(box, H, W, margin=0):
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), W - margin)
    x2 = min(max(margin, x2), W)
    y1 = min(max(0, y1), H - margin)
    y2 = min(max(margin, y2), H)
    w = max(margin, x2 - x1)
    h = max(margin, y2 - y1)
    return [x1, y1, w, h]


class AuthorsTracker:
    """MixFormerOnline (online_size 1) with the full forward, transcribed from the authors' tracker."""

    def __init__(self, network: MixFormerV2, params: TrackerParams) -> None:
        self.network, self.params = network, params
        self.template_size, self.search_size = network.config.template_size, network.config.search_size
        self.events: list[tuple[int, str]] = []

    def initialize(self, image, init_bbox):
        z_patch_arr, _ = authors_sample_target(image, init_bbox, self.params.template_factor, self.template_size)
        template = to_input(z_patch_arr)
        self.template = template
        self.online_template = template
        self.max_pred_score = -1.0
        self.online_max_template = template
        self.state = init_bbox
        self.frame_id = 0

    @torch.inference_mode()
    def track(self, image):
        H, W, _ = image.shape
        self.frame_id += 1
        x_patch_arr, resize_factor = authors_sample_target(image, self.state, self.params.search_factor,
                                                           self.search_size)
        search = to_input(x_patch_arr)
        out_dict = self.network(self.template, self.online_template, search)
        pred_boxes = out_dict["pred_boxes"].view(-1, 4)
        pred_score = out_dict["pred_scores"].view(1).sigmoid().item()
        pred_box = (pred_boxes.mean(dim=0) * self.search_size / resize_factor).tolist()
        self.state = authors_clip_box(self.map_box_back(pred_box, resize_factor), H, W, margin=10)
        self.max_pred_score = self.max_pred_score * 1.0
        if pred_score > 0.5 and pred_score > self.max_pred_score:
            z_patch_arr, _ = authors_sample_target(image, self.state, self.params.template_factor,
                                                   self.template_size)
            self.online_max_template = to_input(z_patch_arr)
            self.max_pred_score = pred_score
            self.events.append((self.frame_id, "candidate"))
        if self.frame_id % self.params.update_interval == 0:
            self.online_template = self.online_max_template
            self.max_pred_score = -1
            self.online_max_template = self.template
            self.events.append((self.frame_id, "replace"))
        return {"target_bbox": self.state, "conf_score": pred_score}

    def map_box_back(self, pred_box, resize_factor):
        cx_prev, cy_prev = self.state[0] + 0.5 * self.state[2], self.state[1] + 0.5 * self.state[3]
        cx, cy, w, h = pred_box
        half_side = 0.5 * self.search_size / resize_factor
        cx_real = cx + (cx_prev - half_side)
        cy_real = cy + (cy_prev - half_side)
        return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]
