"""The built-in ``demo`` dataset: synthetic shapes in YOLO format, generated once and cached.

Why generate instead of download: the project must train end to end on machines with no
network, and a dataset that is a pure function of ``(seed, sizes)`` makes runs reproducible.

Every image draws from its own generator, seeded by ``(seed, split, index)``, so the bytes
do not depend on how many worker processes made them. Generation writes into a hidden
sibling directory and renames it into place only after ``manifest.json`` (the generation
parameters) is written: a killed run leaves no directory that could pass as a cached dataset,
and a cache made with other parameters or an older generator is rebuilt.
"""

import json
import multiprocessing
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import yaml

from common.cache import CACHE_ENV, cache_folder, cache_root  # noqa: F401 (re-exported)
from yolodata.synth import NAMES, render, sample_scene

GENERATOR_VERSION = 2  # bump whenever the output changes: caches are rebuilt
SPLITS = ("train", "val")
PNG_LEVEL = 1  # zlib level 1: noise barely compresses, and level 6 costs twice the time
_PARTIAL = ".partial-"


def default_root() -> Path:
    """``$RES2NET_YOLO_CACHE/demo``, else ``~/.cache/res2net-yolo/demo``."""
    return cache_root() / "demo"


def ensure_demo_dataset(
    root: Path | str | None = None,
    n_train: int = 2000,
    n_val: int = 320,
    img_size: int = 160,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Return the path of ``demo.yaml``, generating the dataset under ``root`` if needed.

    ``workers`` (default: all CPUs) only changes speed, never the output.
    """
    _check_params(n_train, n_val, img_size)
    in_cache = root is None
    root = Path(root).expanduser().resolve() if root is not None else default_root().resolve()
    if in_cache:
        cache_folder(root.parent)
    manifest = _manifest(n_train, n_val, img_size, seed)
    if not _is_complete(root, manifest):
        _generate_atomically(root, manifest, workers)
    return root / "demo.yaml"


def _check_params(n_train: int, n_val: int, img_size: int) -> None:
    if n_train < 1 or n_val < 1:
        raise ValueError(f"demo splits need at least one image, got {n_train=} {n_val=}")
    if img_size < 32:
        raise ValueError(f"demo img_size must be >= 32, got {img_size}")


def _manifest(n_train: int, n_val: int, img_size: int, seed: int) -> dict:
    return {
        "generator": "res2net-yolo-demo",
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "img_size": img_size,
        "seed": seed,
    }


def _is_complete(root: Path, manifest: dict) -> bool:
    """Parameters match and every split holds the expected number of images and labels."""
    try:
        if json.loads((root / "manifest.json").read_text()) != manifest:
            return False
        if not (root / "demo.yaml").is_file():
            return False
        counts = {"train": manifest["n_train"], "val": manifest["n_val"]}
        return all(
            len(os.listdir(root / kind / split)) == n
            for split, n in counts.items()
            for kind in ("images", "labels")
        )
    except (OSError, ValueError):
        return False


def _generate_atomically(root: Path, manifest: dict, workers: int | None) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(root)
    tmp = root.parent / f".{root.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, root, manifest, workers)
        _swap_into_place(tmp, root, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, root: Path, manifest: dict) -> None:
    """Replace ``root`` by ``tmp``; if another process finished first, keep its copy."""
    if root.exists():
        if _is_complete(root, manifest):
            return
        stale = root.parent / f".{root.name}.stale-{uuid.uuid4().hex[:8]}"
        root.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:
        if not _is_complete(root, manifest):
            raise


def _remove_dead_partials(root: Path) -> None:
    """Delete half-written datasets left behind by generations that were killed."""
    for partial in root.parent.glob(f".{root.name}{_PARTIAL}*"):
        pid = partial.name[len(f".{root.name}{_PARTIAL}") :].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _generate(tmp: Path, root: Path, manifest: dict, workers: int | None) -> None:
    sizes = {"train": manifest["n_train"], "val": manifest["n_val"]}
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
    jobs = [
        (str(tmp), split, i, manifest["seed"], manifest["img_size"])
        for split in SPLITS
        for i in range(sizes[split])
    ]
    _run_jobs(jobs, workers)
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": list(NAMES)}
    (tmp / "demo.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _run_jobs(jobs: list[tuple], workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    # A daemon process (e.g. a DataLoader worker) may not start children.
    if workers == 1 or len(jobs) < 64 or multiprocessing.current_process().daemon:
        for job in jobs:
            _write_sample(*job)
        return
    # fork: the children only run numpy and PIL, and spawn would re-import torch in each.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_sample_job, jobs, chunksize=32):
            pass


def _write_sample_job(job: tuple) -> None:
    _write_sample(*job)


def _write_sample(tmp: str, split: str, index: int, seed: int, img_size: int) -> None:
    """Write one image and its label file; the scene depends only on (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = sample_scene(rng, img_size)
    name = f"{index:06d}"
    render(scene).save(Path(tmp) / "images" / split / f"{name}.png", compress_level=PNG_LEVEL)
    lines = [
        "{} {:.6f} {:.6f} {:.6f} {:.6f}".format(*shape.label(img_size)) for shape in scene.shapes
    ]
    (Path(tmp) / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")


def demo_scene(index: int, split: str = "train", seed: int = 0, img_size: int = 160):
    """The scene behind demo image ``index`` (for tests and for inspecting a sample)."""
    return sample_scene(np.random.default_rng([seed, SPLITS.index(split), index]), img_size)
