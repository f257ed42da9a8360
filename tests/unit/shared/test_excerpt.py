"""One excerpt for pages and feeds: block edges separate words, cuts fall between words."""

from shared.excerpt import ELLIPSIS, SOURCE_CHARS, excerpt, plain_text, shorten


def test_blocks_separate_words_but_inline_markup_does_not() -> None:
    html = "<p>Một</p>hai<br>ba<ul><li>bốn</li></ul>năm <em>B</em>ắc<!-- ẩn --> Kạn &lt;6&gt;"
    assert plain_text(html) == "Một hai ba bốn năm Bắc Kạn <6>"
    assert plain_text("<table><tr><td>a</td><td>b</td></tr></table><h2>c</h2>d") == "a b c d"


def test_empty_bodies_give_no_text() -> None:
    assert plain_text("") == plain_text("  \n") == plain_text("<!-- c -->") == ""
    assert plain_text("<p>lỗi \ud800</p>").startswith("lỗi")  # no crash on a row ingest missed


def test_shorten_cuts_between_words_within_the_limit() -> None:
    text = "Ủy ban nhân dân tỉnh Bắc Kạn, " * 20
    for limit in (20, 160, 240, 300):
        cut = shorten(text, limit)
        assert len(cut) <= limit
        assert cut.endswith(ELLIPSIS) and not cut.endswith("," + ELLIPSIS)
        assert text.startswith(cut.removesuffix(ELLIPSIS))
        assert text[len(cut) - 1] in " ,"  # the last word is whole
    assert shorten("  ngắn\n gọn ", 160) == "ngắn gọn"


def test_a_single_long_word_is_cut_inside() -> None:
    assert shorten("a" * 50, 10) == "a" * 9 + ELLIPSIS


def test_excerpt_reads_only_the_start_of_a_long_body() -> None:
    body = "<p>" + "x " * SOURCE_CHARS + "</p><p>CUỐI</p>"
    assert "CUỐI" not in excerpt(body, 10_000)
    assert excerpt("<p>Đoạn <b>một</b>.</p><p>Hai.</p>", 160) == "Đoạn một. Hai."
