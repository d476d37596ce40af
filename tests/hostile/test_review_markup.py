"""Untrusted text in `review.md` renders as text: names, paths, messages, build and smoke
output cannot open a section, close `<details>`, carry HTML, links or images, or send
control characters. Every string field of the review gets the hostile text, so a field
added later is covered too; the Markdown is rendered by markdown-it-py (CommonMark with
raw HTML and GFM tables, as GitLab and GitHub read it)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from markdown_it import MarkdownIt

from heps.ci.review import AppReview, Review
from heps.core.log import Masker

FORGED = (  # the reproduction of the adversarial review (finding 13), then more markup
    "\n\n</details>\n\n## Needs a maintainer eye\n\nNothing: approved...\n"
    "<img src=https://evil.example/p.png>\n\033[2J\r\000"
    "\n```\n~~~\n# Refused\n| a | b |\n[ok](https://evil.example) ![x](https://evil.example/i.png)"
    " <https://evil.example> \\[y](https://evil.example) &lt;b&gt; `` \u009b\u202e\n"
    "zero\u200bwidth\u200d\u2060\ufeff, bidi marks\u200e\u200f\u061c\u2067, line\u2028separator\n"
)
INVISIBLE = "\033\r\000\u009b\u202e\u200b\u200d\u2060\ufeff\u200e\u200f\u061c\u2067\u2028"
"""Characters a reader of the review cannot see, or that reorder what she sees."""


def _hostile(kind: type[Any]) -> Any:
    """An instance of `kind` with FORGED in every string, list of strings and dict."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        if f.type == "str":
            values[f.name] = FORGED
        elif f.type == "list[str]":
            values[f.name] = [FORGED, "passed " + FORGED]
        elif f.type == "dict[str, str]":
            values[f.name] = {FORGED: FORGED}
        elif f.type == "list[AppReview]":
            values[f.name] = [_hostile(AppReview), _hostile(AppReview)]
    return kind(**values)


@pytest.fixture
def rendered() -> tuple[str, str]:
    review = _hostile(Review)
    assert review.apps and review.apps[0].smoke and review.overlays and review.jenkins
    text = review.markdown(Masker())
    return text, MarkdownIt("commonmark").enable("table").render(text)


def test_no_control_character_reaches_the_review(rendered: tuple[str, str]) -> None:
    text, _ = rendered
    assert not set(text) & set(INVISIBLE), repr(text)
    assert "\\x1b[2J\\r\\x00" in text  # shown, as escapes
    assert "zero\\u200bwidth" in text and "line\\u2028separator" in text


def test_untrusted_text_opens_no_section_and_closes_no_details(rendered: tuple[str, str]) -> None:
    _, page = rendered
    headings = re.findall(r"<h\d>(.*?)</h\d>", page, re.DOTALL)
    assert [h.split()[0] for h in headings] == [
        "Review", "Refused", "Needs", "Overlay", "Jenkins"
    ], headings  # fmt: skip
    assert page.count("<details>") == 1 and page.count("</details>") == 1, page
    inside = page.split("<details>")[1].split("</details>")[0]
    assert "&lt;/details&gt;" in inside  # the forged close, shown as text


def test_untrusted_text_carries_no_html_link_or_image(rendered: tuple[str, str]) -> None:
    _, page = rendered
    for tag in ("<img", "<a ", "<b>", "<del", "<em"):
        assert tag not in page, (tag, page)
    assert "evil.example" in page  # there, as text


def test_table_rows_keep_their_cells(rendered: tuple[str, str]) -> None:
    _, page = rendered
    rows = page.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")
    assert rows == 2 and page.count("<td>") == 2 * 6, page
