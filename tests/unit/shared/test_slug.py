import unicodedata

import pytest

from shared.slug import FALLBACK_SLUG, MAX_SLUG_LENGTH, slugify


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Ban hành Kế hoạch hành động", "ban-hanh-ke-hoach-hanh-dong"),
        ("Kế hoạch", "ke-hoach"),
        ("đường Điện Biên Phủ", "duong-dien-bien-phu"),
        ("ĐÀ NẴNG", "da-nang"),
        ("Quyết định số 628/QĐ-TTg ngày 11/5/2020", "quyet-dinh-so-628-qd-ttg-ngay-11-5-2020"),
        ("  Ủy ban   nhân dân — tỉnh!  ", "uy-ban-nhan-dan-tinh"),
        ("Nghị quyết 29-NQ/TW", "nghi-quyet-29-nq-tw"),
    ],
)
def test_vietnamese_titles_transliterate(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_decomposed_input_gives_the_same_slug() -> None:
    title = "Ban hành Kế hoạch hành động đổi mới"
    nfd = unicodedata.normalize("NFD", title)
    assert nfd != title
    assert slugify(nfd) == slugify(title) == "ban-hanh-ke-hoach-hanh-dong-doi-moi"


def test_long_titles_are_cut_at_a_word_boundary() -> None:
    slug = slugify("Thông báo " * 30)
    assert len(slug) <= MAX_SLUG_LENGTH
    assert slug.startswith("thong-bao-thong-bao") and not slug.endswith("-")
    assert all(word in {"thong", "bao"} for word in slug.split("-"))


def test_titles_without_letters_fall_back() -> None:
    assert slugify("!!! ??? 🎉") == FALLBACK_SLUG
