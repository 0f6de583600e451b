"""`main.py convert`: COCO JSON or Pascal VOC XML annotations -> a YOLO-format data set."""

HELP = "convert COCO JSON or Pascal VOC XML annotations into a YOLO-format data set"
DESCRIPTION = """Write one split of a COCO or Pascal VOC data set in the YOLO layout the other
commands read:
  OUT/images/<split>/   the images, as symbolic links (--copy: copies)
  OUT/labels/<split>/   one .txt per image: class cx cy w h, normalised; empty for an image
                        without objects (a background image)
  OUT/data.yaml         path, names and the split: a split whose name (--as, default
                        --split) holds 'train' under train, any other (val, test) under val

Run it again with another split and the same --out to add that split (the class names must
agree); a data.yaml with only a val split is enough for `main.py eval`.

COCO (--annotations instances_val2017.json --images val2017/): bbox [x, y, w, h] in pixels;
the category ids, which are not contiguous, become 0..N-1 in id order with their names.
VOC (--root VOCdevkit/VOC2007): the ids of ImageSets/Main/<split>.txt, boxes from
Annotations/<id>.xml (1-based pixels, converted as Darknet's voc_label.py does), classes the
20 standard names unless --names gives others. Objects marked iscrowd (COCO) or difficult
(VOC) are ignored by those benchmarks' matching: they are left out of the labels and counted.

examples:
  python main.py convert --from coco --annotations annotations/instances_val2017.json \\
      --images val2017 --split val --out coco-yolo
  python main.py convert --from voc --root VOCdevkit/VOC2007 --split trainval \
      --as trainval2007 --out voc-yolo
  python main.py convert --from voc --root VOCdevkit/VOC2012 --split trainval \
      --as trainval2012 --out voc-yolo
  python main.py convert --from voc --root VOCdevkit/VOC2007 --split test --out voc-yolo"""


def add_arguments(p):
    p.add_argument("--from", dest="source", required=True, choices=("coco", "voc"),
                   help="annotation format")
    p.add_argument("--split", required=True,
                   help="split name: the folder under images/ and labels/ (VOC: also the "
                        "ImageSets/Main/<split>.txt list)")
    p.add_argument("--as", dest="split_as", default=None, metavar="NAME",
                   help="folder name of the split under images/ and labels/ (default: "
                        "--split; VOC2007 and VOC2012 trainval need two names)")
    p.add_argument("--out", required=True, help="data set folder to write (or add a split to)")
    p.add_argument("--annotations", default=None, help="COCO: the instances_*.json file")
    p.add_argument("--images", default=None,
                   help="COCO: the folder the JSON's file_name entries are relative to")
    p.add_argument("--root", default=None, help="VOC: the year folder, e.g. VOCdevkit/VOC2007")
    p.add_argument("--names", default=None,
                   help="VOC: class names, a file with one per line or comma-separated "
                        "(default: the 20 VOC classes)")
    p.add_argument("--copy", action="store_true",
                   help="copy the images instead of linking them")


def run(args) -> int:
    from common.errors import UserError
    from common.io import ensure_writable_dir
    from yolodata.convert import VOC_NAMES, read_coco, read_voc, write_split

    name = args.split_as or args.split
    if "/" in name or name in ("", ".", ".."):
        raise UserError(f"--split/--as must be a plain name such as val or train2017, got "
                        f"{name!r}")
    if args.source == "coco":
        if not (args.annotations and args.images):
            raise UserError("--from coco needs --annotations FILE.json and --images DIR")
        annotations = read_coco(args.annotations, args.images)
    else:
        if not args.root:
            raise UserError("--from voc needs --root (e.g. VOCdevkit/VOC2007)")
        names = _names(args.names) if args.names else VOC_NAMES
        annotations = read_voc(args.root, args.split, names)
    out = ensure_writable_dir(args.out, create=False)  # write_split makes it, if it writes
    summary = write_split(annotations, out, name, copy=args.copy)
    print(summary.describe(name))
    return 0


def _names(value: str) -> tuple[str, ...]:
    """A names file (one per line) or a comma-separated list."""
    from pathlib import Path

    from common.errors import UserError
    from common.io import read_text

    text = read_text(value, "names file") if Path(value).is_file() else value.replace(",", "\n")
    names = tuple(n.strip() for n in text.splitlines() if n.strip())
    if not names or len(set(names)) != len(names):
        raise UserError(f"--names must give unique class names, got {list(names)}")
    return names
