"""Detection evaluation: NMS post-processing of YOLO outputs and COCO-standard mAP."""

from common.boxes import box_iou, cxcywh_to_xyxy
from evaluation.coco_map import ClassAP, MapAccumulator, MapResult, coco_map
from evaluation.nms import batched_nms, postprocess
from evaluation.table import format_map_table

__all__ = [
    "ClassAP",
    "MapAccumulator",
    "MapResult",
    "batched_nms",
    "box_iou",
    "coco_map",
    "cxcywh_to_xyxy",
    "format_map_table",
    "postprocess",
]
