"""The artifact path check (runledger.artifact_store.paths): every trick that could name
something outside a folder is refused, plain names of any script are kept as given."""

from __future__ import annotations

import pytest

from runledger.artifact_store.paths import UnsafePath, check_relative_path

REFUSED = {
    "parent": "../x", "parent inside": "a/../../x", "dot": "./x", "trailing parent": "a/..",
    "absolute": "/etc/passwd", "empty segment": "a//b", "trailing slash": "a/", "empty": "",
    "backslash": "..\\..\\x", "backslash name": "a\\b", "NUL": "a\x00b", "newline": "a\nb",
    "encoded parent": "%2e%2e/x", "encoded parent upper": "%2E%2E/x", "encoded slash": "a%2f..%2f..%2fx",
    "double encoded": "%252e%252e/x", "encoded backslash": "a%5c..%5cx", "encoded NUL": "a%00",
    "two-dot leader": "\u2025/x", "full-width dots": "\uff0e\uff0e/x", "full-width slash": "a\uff0f..",
    "right-to-left override": "a\u202eb", "zero-width space": "a\u200bb", "bad utf-8 escape": "%ff%fe",
    "long": "a/" * 600 + "b", "long segment": "x" * 256,
}

ACCEPTED = ["a", "model/MLmodel", "plots/loss curve.png", "r\u00e9sum\u00e9.txt", "\u6f22\u5b57/\u30c7\u30fc\u30bf.json",
            "100%", "a..b", "...", ".hidden", "a%20b"]


@pytest.mark.parametrize("path", list(REFUSED.values()), ids=list(REFUSED))
def test_a_path_that_could_leave_the_folder_is_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        check_relative_path(path)


@pytest.mark.parametrize("path", ACCEPTED)
def test_a_plain_relative_path_is_kept_as_given(path: str) -> None:
    assert check_relative_path(path) == path


def test_the_folder_itself_is_the_empty_path_only_where_allowed() -> None:
    assert check_relative_path("", allow_empty=True) == ""
