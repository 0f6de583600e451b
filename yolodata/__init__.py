"""YOLO-format detection data: dataset descriptions, strict labels, loader, built-in demo.

Typical use::

    spec = load_spec("demo")                      # or a data .yaml / Darknet .data file
    train = check_split(spec.train, spec.num_classes, "train")
    ds = YoloDataset(train.images, spec.num_classes, img_size=160, augment=True,
                     cache_images=True)
    loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate)
"""

from common.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from yolodata.augment import AugmentConfig
from yolodata.dataset import Batch, Sample, Unreadable, YoloDataset, collate, letterbox_image
from yolodata.demo import default_root, ensure_demo_dataset
from yolodata.errors import DataError, ImageError, LabelError
from yolodata.geometry import Letterbox
from yolodata.labels import SplitCheck, check_split, label_path, read_labels
from yolodata.spec import DataSpec, load_spec
from yolodata.synth import NAMES as DEMO_NAMES

__all__ = [
    "DEMO_NAMES",
    "AugmentConfig",
    "Batch",
    "DataError",
    "DataSpec",
    "ImageError",
    "LabelError",
    "Letterbox",
    "Sample",
    "SplitCheck",
    "Unreadable",
    "YoloDataset",
    "check_split",
    "collate",
    "cxcywh_to_xyxy",
    "default_root",
    "ensure_demo_dataset",
    "label_path",
    "letterbox_image",
    "load_spec",
    "read_labels",
    "xyxy_to_cxcywh",
]
