"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015) as arrays of 28x28 images.

Reads the original layout ``ALPHABET/characterNN/*.png`` from folders or directly from the zip
archives it is distributed in (``images_background.zip``, ``images_evaluation.zip``, the small
splits ``images_background_small1.zip`` / ``small2``). Several sources are merged: each
``(alphabet, character)`` is one class and a drawing (file name) found in two sources is kept
once, so the two small background splits (which both contain Greek and Latin) give 8 alphabets.

Images are converted to grey, resized to 28x28 with a Lanczos filter and inverted so that
strokes are bright: the preprocessing of learn2learn (torchvision's Omniglot, ``Resize(28,
LANCZOS)``, ``1 - x``) and of the MAML code (cbfinn/maml resizes with Lanczos and feeds
``1 - image / 255``), MAML paper Sec. 5.2. They are stored as ``uint8`` "ink" (``255 - grey``),
exactly what the resize produced, and cached in one ``.npz`` per source listing, so that only the
first read decodes PNGs.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28
LAYOUT = (
    "expected Omniglot's layout ALPHABET/characterNN/*.png, as a folder or as its zip archives "
    "(e.g. images_background.zip)"
)
# Bump when the preprocessing changes, so that old caches are not reused.
_CACHE_VERSION = 1
# Default split when no alphabet lists are given: fractions of the alphabets held out.
TEST_FRACTION = 0.25
VAL_FRACTION = 0.1
SPLITS = ("train", "val", "test")


class OmniglotDataError(ValueError):
    """Missing or malformed Omniglot data; the message is one line fit for a user."""


@dataclass(frozen=True)
class OmniglotData:
    """Every character of the sources, sorted by (alphabet, character).

    ``images[c, d]`` is drawing d of character c as ``uint8`` ink (255 on strokes);
    ``counts[c]`` drawings exist for character c, the rest of ``images[c]`` is zero padding.
    """

    images: np.ndarray  # uint8 [characters, max drawings, 28, 28]
    counts: np.ndarray  # int64 [characters]
    alphabets: tuple[str, ...]  # alphabet of each character
    characters: tuple[str, ...]  # folder name of each character, e.g. "character01"

    @property
    def alphabet_names(self) -> list[str]:
        """The distinct alphabets, sorted."""
        return sorted(set(self.alphabets))

    def character_indices(self, alphabets: Sequence[str]) -> np.ndarray:
        """Indices of the characters that belong to ``alphabets``."""
        wanted = set(alphabets)
        return np.array([i for i, a in enumerate(self.alphabets) if a in wanted], dtype=np.int64)


@dataclass(frozen=True)
class _Entry:
    """One PNG of some source: where it is and what it is."""

    alphabet: str
    character: str
    name: str
    archive: str  # zip file path, or "" for a plain file
    path: str  # member name in the archive, or file path
    signature: str  # size and CRC / modification time: changes when the file does


def _parts(relative: str, where: str) -> tuple[str, str, str]:
    parts = [p for p in relative.replace("\\", "/").split("/") if p]
    if len(parts) < 3:
        raise OmniglotDataError(f"{where}: a .png outside ALPHABET/characterNN/; {LAYOUT}")
    return parts[-3], parts[-2], parts[-1]


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    # macOS archives carry "__MACOSX/.../._x.png" resource forks: not images.
    return name.lower().endswith(".png") and not base.startswith("._") and "__MACOSX" not in name


def _list_zip(path: Path) -> list[_Entry]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise OmniglotDataError(
            f"'{path}' is not a readable zip archive ({err}); {LAYOUT}"
        ) from None
    entries = []
    for info in infos:
        if info.is_dir() or not _is_image(info.filename):
            continue
        alphabet, character, name = _parts(info.filename, f"'{path}' member '{info.filename}'")
        signature = f"{info.file_size}:{info.CRC}"
        entries.append(_Entry(alphabet, character, name, str(path), info.filename, signature))
    return entries


def _list_root(root: Path) -> list[_Entry]:
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise OmniglotDataError(f"data_root '{root}' is neither a folder nor a zip archive; "
                                    f"{LAYOUT}")
        return _list_zip(root)
    if not root.is_dir():
        raise OmniglotDataError(f"data_root '{root}' does not exist; {LAYOUT}")
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()  # a deterministic walk: the first copy of a duplicated drawing wins
        for file in sorted(files):
            path = Path(folder) / file
            if file.lower().endswith(".zip"):
                entries.extend(_list_zip(path))
            elif _is_image(file):
                relative = path.relative_to(root).as_posix()
                alphabet, character, name = _parts(relative, f"'{path}'")
                stat = path.stat()
                signature = f"{stat.st_size}:{stat.st_mtime_ns}"
                entries.append(_Entry(alphabet, character, name, "", str(path), signature))
    return entries


def list_images(data_root: str | Path | Sequence[str | Path]) -> list[_Entry]:
    """Every distinct drawing of the sources in ``data_root`` (a folder, a zip, or a list of
    them), sorted by (alphabet, character, file name); a duplicate keeps its first source."""
    roots = [data_root] if isinstance(data_root, str | Path) else list(data_root)
    if not roots:
        raise OmniglotDataError(f"data_root is an empty list; {LAYOUT}")
    unique: dict[tuple[str, str, str], _Entry] = {}
    for root in roots:
        for entry in _list_root(Path(root).expanduser()):
            unique.setdefault((entry.alphabet, entry.character, entry.name), entry)
    if not unique:
        where = ", ".join(f"'{r}'" for r in roots)
        raise OmniglotDataError(f"data_root {where} holds no .png images; {LAYOUT}")
    return [unique[key] for key in sorted(unique)]


def _decode(data: bytes, where: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            # Grey first: Pillow resizes 1-bit images with nearest neighbour whatever is asked.
            grey = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise OmniglotDataError(f"cannot read image {where}: {err}") from None
    return 255 - np.asarray(grey, dtype=np.uint8)


def _read_images(entries: list[_Entry], size: int) -> OmniglotData:
    keys = sorted({(e.alphabet, e.character) for e in entries})
    index = {key: i for i, key in enumerate(keys)}
    counts = np.zeros(len(keys), dtype=np.int64)
    for e in entries:
        counts[index[(e.alphabet, e.character)]] += 1
    images = np.zeros((len(keys), int(counts.max()), size, size), dtype=np.uint8)
    filled = np.zeros(len(keys), dtype=np.int64)
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for e in entries:  # sorted by file name within a character: drawing order is stable
            if e.archive:
                if e.archive not in archives:
                    archives[e.archive] = zipfile.ZipFile(e.archive)
                raw = archives[e.archive].read(e.path)
                where = f"'{e.path}' in '{e.archive}'"
            else:
                raw = Path(e.path).read_bytes()
                where = f"'{e.path}'"
            c = index[(e.alphabet, e.character)]
            images[c, filled[c]] = _decode(raw, where, size)
            filled[c] += 1
    finally:
        for archive in archives.values():
            archive.close()
    return OmniglotData(
        images=images,
        counts=counts,
        alphabets=tuple(k[0] for k in keys),
        characters=tuple(k[1] for k in keys),
    )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/maml_rl/omniglot`` (``~/.cache/maml_rl/omniglot`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maml_rl" / "omniglot"


def _cache_key(entries: list[_Entry], size: int) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION} size={size}\n".encode())
    for e in entries:
        digest.update(f"{e.alphabet}/{e.character}/{e.name} {e.signature}\n".encode())
    return digest.hexdigest()[:20]


def _load_cache(path: Path) -> OmniglotData | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return OmniglotData(
                images=f["images"],
                counts=f["counts"],
                alphabets=tuple(str(a) for a in f["alphabets"]),
                characters=tuple(str(c) for c in f["characters"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # absent or damaged (e.g. an interrupted write elsewhere): read again


def _save_cache(data: OmniglotData, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        images=data.images,
        counts=data.counts,
        alphabets=np.array(data.alphabets),
        characters=np.array(data.characters),
    )
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one


_MEMO: dict[tuple, OmniglotData] = {}


def load_omniglot(
    data_root: str | Path | Sequence[str | Path],
    cache_dir: str | Path | None = None,
    image_size: int = IMAGE_SIZE,
) -> OmniglotData:
    """All characters of ``data_root`` (a folder in the Omniglot layout, a zip archive of it, a
    folder holding such archives, or a list of these), merged and deduplicated.

    The first call for a given source listing decodes the PNGs and writes
    ``cache_dir/omniglot-<size>px-<hash>.npz`` (default :func:`default_cache_dir`); later calls,
    in this process or another, read that file. Raises :class:`OmniglotDataError` (one line) for
    a missing or malformed source.
    """
    roots = [data_root] if isinstance(data_root, str | Path) else list(data_root)
    memo_key = (tuple(str(Path(r).expanduser().resolve()) for r in roots), image_size,
                str(cache_dir))
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    entries = list_images(roots)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"omniglot-{image_size}px-{_cache_key(entries, image_size)}.npz"
    data = _load_cache(path)
    if data is None:
        data = _read_images(entries, image_size)
        try:
            _save_cache(data, path)
        except OSError:
            pass  # a read-only cache folder costs time on the next run, nothing else
    _MEMO[memo_key] = data
    return data


def split_alphabets(
    alphabets: Sequence[str],
    val_alphabets: Sequence[str] | None = None,
    test_alphabets: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Assign every alphabet to one of ``train``, ``val``, ``test``.

    With neither list given, a deterministic default: alphabets ordered by the SHA-256 of their
    name (an order that does not change when alphabets are added or removed), the first
    ``round(0.25 n)`` held out for test, the next ``round(0.1 n)`` for val (each at least one
    while meta-training keeps one), the rest for meta-training; 8 alphabets give 2 / 1 / 5, the
    full set's 50 give 12 / 5 / 33. With a list given, those alphabets form that split (a list not
    given is empty) and meta-training gets the rest. Test classes thus come from alphabets never
    seen in meta-training, as the alphabet-wise split of the Omniglot background/evaluation sets.
    """
    names = sorted(set(alphabets))
    if val_alphabets is None and test_alphabets is None:
        order = sorted(names, key=lambda a: hashlib.sha256(a.encode()).hexdigest())
        n_test = min(max(1, round(TEST_FRACTION * len(order))), max(len(order) - 1, 0))
        n_val = min(max(1, round(VAL_FRACTION * len(order))), max(len(order) - n_test - 1, 0))
        test, val = order[:n_test], order[n_test : n_test + n_val]
    else:
        val, test = list(val_alphabets or []), list(test_alphabets or [])
        for key, chosen in (("val_alphabets", val), ("test_alphabets", test)):
            unknown = [a for a in chosen if a not in names]
            if unknown:
                raise OmniglotDataError(
                    f"{key}: unknown alphabet(s) {unknown}; the data has {names}"
                )
        both = sorted(set(val) & set(test))
        if both:
            raise OmniglotDataError(f"alphabets {both} are in both val_alphabets and "
                                    "test_alphabets; the splits must be disjoint")
    held_out = set(val) | set(test)
    return {
        "train": [a for a in names if a not in held_out],
        "val": sorted(val),
        "test": sorted(test),
    }
