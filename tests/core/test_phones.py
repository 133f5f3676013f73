"""Phone numbers: every spelling Sipuni or a CRM uses maps to one E.164 form and back out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.phones import (
    DisplayFormat,
    PhoneFormat,
    digits_only,
    display_number,
    extension_of,
    format_number,
    last_digits,
    normalize,
    search_variants,
    strip_line_suffix,
)


@pytest.mark.parametrize(
    "raw",
    [
        "89161234567",  # trunk prefix 8, as in the doc example
        "79161234567",  # country code without +, as in captures
        "+79161234567",
        "9161234567",  # bare 10-digit national number
        "+7 (916) 123-45-67",
        "8 (916) 123-45-67",
        " 8-916-123-45-67 ",
        "0079161234567",
    ],
)
def test_russian_spellings_normalise_to_one_number(raw: str) -> None:
    assert normalize(raw) == "+79161234567"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("74951234567_id265648", "+74951234567"),  # a missed call ends on the line with _id…
        ("77470946621_id87957", "+77470946621"),
        ("998783337125_id265648", "+998783337125"),
        ("79161234567_id", "+79161234567"),
    ],
)
def test_line_suffix_is_cut(raw: str, e164: str) -> None:
    assert normalize(raw) == e164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("998901234567", "+998901234567"),  # Uzbekistan, delivered without +
        ("+998901234567", "+998901234567"),
        ("00998901234567", "+998901234567"),
        ("380501234567", "+380501234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("77011234567", "+77011234567"),  # Kazakhstan shares country code 7
    ],
)
def test_foreign_numbers_keep_their_country(raw: str, e164: str) -> None:
    assert normalize(raw) == e164


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("87011234567", "KZ", "+77011234567"),
        ("901234567", "UZ", "+998901234567"),
        ("+79161234567", "UZ", "+79161234567"),
        ("79161234567", "UZ", "+79161234567"),
    ],
)
def test_bare_national_numbers_are_read_in_the_account_region(
    raw: str, region: str, e164: str
) -> None:
    assert normalize(raw, region) == e164


@pytest.mark.parametrize(
    "raw",
    [None, "", "   ", "abc", "anonymous", "_id265648", "101", "123", "8800", "012345101", "+"],
)
def test_what_cannot_be_an_external_number_is_none(raw: str | None) -> None:
    assert normalize(raw) is None


@given(st.from_regex(r"9[0-9]{9}", fullmatch=True))
def test_every_russian_mobile_reads_the_same_in_all_spellings(national: str) -> None:
    e164 = "+7" + national
    spellings = ["8" + national, "7" + national, "+7" + national, national]
    assert {normalize(s) for s in spellings} == {e164}
    # …and each spelling we write out reads back as the same number.
    assert {normalize(format_number(e164, fmt)) for fmt in PhoneFormat} == {e164}


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        (PhoneFormat.PLUS, "+79161234567"),
        (PhoneFormat.INTERNATIONAL, "79161234567"),
        (PhoneFormat.NATIONAL_8, "89161234567"),
        ("+7XXXXXXXXXX", "+79161234567"),
        ("7XXXXXXXXXX", "79161234567"),
        ("8XXXXXXXXXX", "89161234567"),
    ],
)
def test_format_number(fmt: PhoneFormat | str, written: str) -> None:
    assert format_number("+79161234567", fmt) == written


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        (PhoneFormat.PLUS, "+998901234567"),
        (PhoneFormat.INTERNATIONAL, "998901234567"),
        (PhoneFormat.NATIONAL_8, "998901234567"),  # 8… exists only for country code 7
    ],
)
def test_format_number_of_a_foreign_number(fmt: PhoneFormat, written: str) -> None:
    assert format_number("+998901234567", fmt) == written


def test_format_number_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="is not a valid PhoneFormat"):
        format_number("+79161234567", "+7 (XXX) XXX-XX-XX")


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        (PhoneFormat.PLUS, "79161234567"),  # Usedesk refuses "+": client cards get 7…
        (PhoneFormat.INTERNATIONAL, "79161234567"),
        (PhoneFormat.NATIONAL_8, "89161234567"),
    ],
)
def test_digits_only(fmt: PhoneFormat, written: str) -> None:
    assert digits_only("+79161234567", fmt) == written
    assert written.isdigit()


def test_search_variants_cover_8_7_and_plus_spellings() -> None:
    assert search_variants("+79161234567") == ["79161234567", "+79161234567", "89161234567"]


def test_search_variants_of_a_foreign_number_have_no_8_form() -> None:
    assert search_variants("+998901234567") == ["998901234567", "+998901234567"]


@pytest.mark.parametrize(
    ("raw", "ext"),
    [
        ("012345101", "101"),  # account number + extension
        ("101", "101"),
        ("012345101_id77", "101"),
        ("0123452001", "2001"),
        ("012345", "012345"),  # the bare account number is not an extension of itself
        ("070196201", "070196201"),  # another account's number is left alone
        ("", None),
        (None, None),
    ],
)
def test_extension_of(raw: str | None, ext: str | None) -> None:
    assert extension_of(raw, "012345") == ext


@pytest.mark.parametrize(
    ("number", "count", "tail"),
    [
        ("+7 (916) 123-45-67", 10, "9161234567"),
        ("89161234567", 10, "9161234567"),
        ("+79161234567", 4, "4567"),
        ("123", 10, "123"),
        ("", 10, ""),
    ],
)
def test_last_digits(number: str, count: int, tail: str) -> None:
    assert last_digits(number, count) == tail


def test_last_digits_match_across_spellings() -> None:
    assert len({last_digits(s) for s in ("89161234567", "79161234567", "+7 916 123-45-67")}) == 1


@pytest.mark.parametrize(
    ("raw", "stripped"),
    [("74951234567_id265648", "74951234567"), (" 101 ", "101"), ("79161234567", "79161234567")],
)
def test_strip_line_suffix(raw: str, stripped: str) -> None:
    assert strip_line_suffix(raw) == stripped


@pytest.mark.parametrize(
    ("e164", "fmt", "region", "shown"),
    [
        ("+79161234567", "e164", "RU", "+79161234567"),
        ("+79161234567", "international", "RU", "+7 916 123-45-67"),
        ("+79161234567", "national", "RU", "8 (916) 123-45-67"),
        ("+74951234567", "national", "RU", "8 (495) 123-45-67"),
        # Kazakhstan shares +7: dialled from Russia with 8 too.
        ("+77011234567", "national", "RU", "8 (701) 123 4567"),
        # A foreign number has no national form here: international, to be dialled back.
        ("+998901234567", "national", "RU", "+998 90 123 45 67"),
        ("+998901234567", "national", "UZ", "90 123 45 67"),
        ("+442079460000", "international", "RU", "+44 20 7946 0000"),
    ],
)
def test_a_number_is_shown_in_the_operators_format(
    e164: str, fmt: str, region: str, shown: str
) -> None:
    assert display_number(e164, DisplayFormat(fmt), region) == shown


def test_text_that_is_not_a_number_is_shown_as_it_came() -> None:
    assert display_number("anonymous", DisplayFormat.NATIONAL) == "anonymous"
