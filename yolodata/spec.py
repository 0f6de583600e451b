"""Dataset descriptions: Ultralytics-style data yaml, Darknet ``.data``, or the word ``demo``.

All three are reduced to one ``DataSpec`` (image lists + class names) so the rest of the
project never branches on where a dataset came from.

Relative paths are resolved so that the result does not depend on the working directory
where possible:

* yaml: ``path`` is relative to the yaml's folder (default: that folder); ``train`` and
  ``val`` are relative to ``path``;
* ``.data``: paths are tried relative to the ``.data`` file's folder, then relative to the
  working directory (where Darknet itself resolves them);
* a ``.txt`` image list: relative lines are relative to the list file's folder.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from common.io import read_text
from yolodata.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class DataSpec:
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    names: tuple[str, ...]
    source: Path

    @property
    def num_classes(self) -> int:
        return len(self.names)


def load_spec(source: str | Path) -> DataSpec:
    """Read a ``.yaml``/``.yml`` data file, a Darknet ``.data`` file, or ``demo``."""
    if str(source) == "demo":
        from yolodata.demo import ensure_demo_dataset

        return load_spec(ensure_demo_dataset())
    path = Path(source).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a folder; {_folder_hint(path)}")
    if not path.is_file():
        raise DataError(f"{path}: dataset description not found")
    if path.suffix in (".yaml", ".yml"):
        return _from_yaml(path)
    if path.suffix == ".data":
        return _from_darknet(path)
    raise DataError(f"{path}: expected a .yaml/.yml data file, a Darknet .data file or 'demo'")


def _folder_hint(folder: Path) -> str:
    """What --data wants instead of a folder, naming the descriptions found inside it."""
    found = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".data"))
    hint = f" (this one holds {', '.join(found[:3])})" if found else ""
    return ("expected a data .yaml/.yml (path, train, val, names), a Darknet .data file or "
            f"'demo'{hint}")


def _from_yaml(path: Path) -> DataSpec:
    try:
        doc = yaml.safe_load(read_text(path, "data yaml"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid yaml ({e})".replace("\n", " ")) from e
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a mapping with path/train/val/names")
    missing = [key for key in ("val", "names") if key not in doc]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    base = (path.parent / Path(str(doc.get("path") or ".")).expanduser()).resolve()
    names = _yaml_names(doc["names"], path)
    if "nc" in doc and doc["nc"] != len(names):
        raise DataError(f"{path}: nc={doc['nc']} but names has {len(names)} entries")
    # A yaml without train (what `main.py convert` writes for a val split) serves eval.
    train = _split_images(doc["train"], [base], f"{path}: train") if "train" in doc else ()
    val = _split_images(doc["val"], [base], f"{path}: val")
    return DataSpec(train, val, names, path.resolve())


def _yaml_names(value: object, path: Path) -> tuple[str, ...]:
    """``names`` as a list, or as ``{id: name}`` with ids exactly ``0..n-1``."""
    if isinstance(value, list):
        names = tuple(str(v) for v in value)
    elif isinstance(value, dict):
        if set(value) != set(range(len(value))):
            ids = ", ".join(str(i) for i in value)
            raise DataError(f"{path}: names ids must be 0..{len(value) - 1}, got {ids}")
        names = tuple(str(value[i]) for i in range(len(value)))
    else:
        raise DataError(f"{path}: names must be a list or an {{id: name}} mapping")
    if not names:
        raise DataError(f"{path}: names is empty")
    return names


def _from_darknet(path: Path) -> DataSpec:
    keys = _read_key_values(path)
    valid_key = "valid" if "valid" in keys else "val"
    missing = [k for k in ("train", valid_key, "names") if k not in keys]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    bases = [path.parent.resolve(), Path.cwd()]
    names_file = _existing(keys["names"], bases, f"{path}: names")
    names = tuple(n.strip() for n in read_text(names_file, "names file").splitlines() if n.strip())
    if not names:
        raise DataError(f"{names_file}: no class names")
    if "classes" in keys and keys["classes"] != str(len(names)):
        raise DataError(f"{path}: classes={keys['classes']} but {names_file} has {len(names)}")
    train = _split_images(keys["train"], bases, f"{path}: train")
    val = _split_images(keys[valid_key], bases, f"{path}: {valid_key}")
    return DataSpec(train, val, names, path.resolve())


def _read_key_values(path: Path) -> dict[str, str]:
    """``key = value`` lines; ``#`` starts a comment; keys Darknet also uses are kept as is."""
    keys = {}
    for lineno, raw in enumerate(read_text(path, "Darknet .data file").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DataError(f"{path}:{lineno}: expected 'key = value', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        keys[key] = value
    return keys


def _existing(entry: str, bases: list[Path], what: str) -> Path:
    candidates = [(base / Path(entry).expanduser()).resolve() for base in bases]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = " or ".join(dict.fromkeys(str(c) for c in candidates))
    raise DataError(f"{what}: {tried} does not exist")


def _split_images(entries: object, bases: list[Path], what: str) -> tuple[Path, ...]:
    """One entry or a list of entries, each a folder of images or a ``.txt`` list of them."""
    entries = entries if isinstance(entries, list) else [entries]
    images: list[Path] = []
    for entry in entries:
        images += _entry_images(_existing(str(entry), bases, what), what)
    if not images:
        raise DataError(f"{what}: no images")
    return tuple(images)


def _entry_images(entry: Path, what: str) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.suffix == ".txt":
        lines = (line.strip() for line in read_text(entry, "image list").splitlines())
        return [(entry.parent / Path(line).expanduser()).resolve() for line in lines if line]
    raise DataError(f"{what}: {entry} is neither a folder of images nor a .txt list")
