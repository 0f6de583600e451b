"""Darknet cfg/weights model zoo with Res2Net and Res2-Triangle blocks."""

from .cfg import Cfg, format_cfg, parse_cfg, parse_cfg_text, write_cfg
from .errors import CfgError, UserError, WeightsError
from .exporting import Exported, export
from .model import Darknet
from .shapes import LayerShape, Shape, infer_shapes
from .weights import WeightsHeader

__all__ = [
    "Cfg", "CfgError", "Darknet", "Exported", "LayerShape", "Shape", "UserError", "WeightsError",
    "WeightsHeader", "export", "format_cfg", "infer_shapes", "parse_cfg", "parse_cfg_text",
    "write_cfg",
]
