"""shared.slug.fold: the title search key, diacritic- and case-insensitive."""

import unicodedata

import pytest

from shared.slug import fold


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Kế hoạch  số 5", "ke hoach so 5"),
        ("ĐÀ NẴNG", "da nang"),
        ("  Quyết định\tsố 628/QĐ-TTg\n", "quyet dinh so 628/qd-ttg"),
        ("", ""),
    ],
)
def test_fold_transliterates_lowercases_and_collapses_spaces(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_decomposed_input_folds_the_same() -> None:
    title = "Ban hành Kế hoạch đổi mới"
    assert fold(unicodedata.normalize("NFD", title)) == fold(title) == "ban hanh ke hoach doi moi"


def test_a_folded_query_is_found_in_the_folded_title() -> None:
    assert fold("ke hoach") in fold("Ban hành Kế hoạch hành động")
    assert fold("KẾ HOẠCH") in fold("Ban hành Kế hoạch hành động")
