"""Phone numbers: one canonical form inside (E.164), the operator's format outside.

Sipuni hands us numbers as carriers spell them (``89161234567``, ``79161234567``,
``998901234567``), internal ones as account number + extension (``012345101``), and a missed
inbound call may end on the company line with an ``_id<digits>`` suffix. CRMs hold numbers in
any spelling; ``same_number`` compares a stored spelling with a caller's number, and
``search_queries`` gives the substrings that find a number in a ``LIKE %…%`` search.
"""

from __future__ import annotations

import re
from enum import StrEnum

import phonenumbers

_ID_SUFFIX = re.compile(r"_id\d*$")
# A phone search looks for the national number's last seven digits: every spelling of a
# number keeps them together, or split only by the region's own grouping ("123-45-67").
SEARCH_TAIL_DIGITS = 7
_SWAP_SEPARATORS = str.maketrans("- ", " -")


class PhoneFormat(StrEnum):
    """How a number is written into CRM cards (the seed's «Формат номеров»)."""

    PLUS = "+7XXXXXXXXXX"  # E.164: +79161234567
    INTERNATIONAL = "7XXXXXXXXXX"  # E.164 without the plus: 79161234567
    NATIONAL_8 = "8XXXXXXXXXX"  # Russian trunk prefix: 89161234567


class DisplayFormat(StrEnum):
    """How a number is shown to a person (the agent page's ``[notifications] phone_format``).

    Unlike :class:`PhoneFormat`, which spells numbers the way CRMs store and APIs accept them,
    these are for reading, grouped as the number's country writes it.
    """

    E164 = "e164"  # +79161234567
    INTERNATIONAL = "international"  # +7 916 123-45-67
    NATIONAL = "national"  # 8 (916) 123-45-67; a number from another country: international


_DISPLAY = {
    DisplayFormat.E164: phonenumbers.PhoneNumberFormat.E164,
    DisplayFormat.INTERNATIONAL: phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    DisplayFormat.NATIONAL: phonenumbers.PhoneNumberFormat.NATIONAL,
}


def display_number(e164: str, fmt: DisplayFormat | str, region: str = "RU") -> str:
    """``e164`` as a person reads it in ``fmt``; ``national`` only for a number dialled
    nationally from ``region`` (same country code), since a foreign number's national form
    cannot be dialled from there. Text that is not a number is returned as it is."""
    fmt = DisplayFormat(fmt)
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if fmt is DisplayFormat.NATIONAL and (
        number.country_code != phonenumbers.country_code_for_region(region)
    ):
        fmt = DisplayFormat.INTERNATIONAL
    return phonenumbers.format_number(number, _DISPLAY[fmt])


def strip_line_suffix(raw: str) -> str:
    """``74951234567_id265648`` → ``74951234567`` (the suffix names a line, not a number)."""
    return _ID_SUFFIX.sub("", raw.strip())


def extension_of(raw: str | None, account: str) -> str | None:
    """The extension in an internal number: ``012345101`` → ``101``; ``101`` stays ``101``."""
    if not raw:
        return None
    raw = strip_line_suffix(raw)
    if raw.startswith(account) and len(raw) > len(account):
        return raw[len(account) :]
    return raw


def normalize(raw: str | None, region: str = "RU") -> str | None:
    """The E.164 form of an external number, or ``None`` when it cannot be one.

    A bare national number is read in ``region``; in Russia and Kazakhstan the trunk prefix
    ``8`` and a leading ``7`` without ``+`` both mean country code 7.
    """
    if not raw:
        return None
    text = strip_line_suffix(raw)
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    if text.startswith("+") or text.startswith("00"):
        candidate = "+" + digits.removeprefix("00") if text.startswith("00") else "+" + digits
        return _parse(candidate, None)
    if region in ("RU", "KZ") and len(digits) == 11 and digits[0] in "78":
        return _parse("+7" + digits[1:], None)
    national = _parse(digits, region)
    if national is not None:
        return national
    # Carriers often deliver international numbers without "+": 998901234567, 375…
    return _parse("+" + digits, None)


def _parse(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def format_number(e164: str, fmt: PhoneFormat | str) -> str:
    """Write an E.164 number in the operator's chosen format.

    ``8…`` applies only to numbers with country code 7; others keep their international form.
    """
    fmt = PhoneFormat(fmt)
    digits = e164.lstrip("+")
    if fmt is PhoneFormat.PLUS:
        return "+" + digits
    if fmt is PhoneFormat.NATIONAL_8 and digits.startswith("7") and len(digits) == 11:
        return "8" + digits[1:]
    return digits


def digits_only(e164: str, fmt: PhoneFormat | str) -> str:
    """The chosen format stripped of ``+``: what APIs that refuse ``+`` accept (Usedesk)."""
    return format_number(e164, fmt).lstrip("+")


def search_variants(e164: str) -> list[str]:
    """Spellings a CRM may hold for one number, most likely first."""
    digits = e164.lstrip("+")
    variants = [digits, "+" + digits]
    if digits.startswith("7") and len(digits) == 11:
        variants.append("8" + digits[1:])
    return variants


def last_digits(number: str, count: int = 10) -> str:
    """The last ``count`` digits: how CRMs that store numbers freely are matched."""
    return re.sub(r"\D", "", number)[-count:]


def same_number(stored: str, e164: str, region: str = "RU") -> bool:
    """Whether ``stored``, a phone as a person typed it into a CRM, is the number ``e164``.

    The whole number is compared (country code and national number), the stored text read as
    :func:`normalize` reads a caller's number in ``region``: ``"+7 916 123-45-67"``,
    ``"8 (916) 123-45-67"``, ``"+7(916)1234567"``, ``"89161234567"`` and (in RU)
    ``"9161234567"`` are all ``+79161234567``. A number that only ends the same
    (``"379161234567"``, ``"+91 91612 34567"``) or a local number without its area code
    (``"123-45-67"``) is another number.
    """
    return normalize(stored, region) == e164


def search_queries(e164: str) -> list[str]:
    """Substrings that find ``e164`` among phones stored as typed, for a ``LIKE %…%`` search.

    The national number's last seven digits as one run (found inside ``79161234567``,
    ``89161234567``, ``+7(916)1234567``), then the same digits grouped as the number's country
    writes them (``123-45-67`` inside ``+7 916 123-45-67`` and ``8 (916) 123-45-67``), then that
    grouping with ``-`` and spaces swapped (``123 45 67``). Duplicates are dropped, so a
    country whose format has no separators there needs one query. A search only proposes
    candidates: :func:`same_number` decides. Raises ``ValueError`` if ``e164`` is not E.164.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{e164!r} is not a number in E.164 form") from exc
    national = phonenumbers.national_significant_number(number)
    tail = national[-SEARCH_TAIL_DIGITS:]
    written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    grouped = _suffix_holding(written, len(tail))
    return list(dict.fromkeys([tail, grouped, grouped.translate(_SWAP_SEPARATORS)]))


def search_pattern(e164: str) -> str:
    """One SQL ``LIKE`` pattern that finds ``e164`` in every spelling :func:`search_queries`
    finds, for a search that lets ``%`` through as a wildcard.

    The country's grouping of the last seven digits with each separator made ``%``:
    ``123%45%67`` for ``+79161234567`` matches ``1234567``, ``123-45-67``, ``123 45 67`` and
    groupings the three queries miss (``123 4567``). Only candidates: :func:`same_number`
    decides. Raises ``ValueError`` if ``e164`` is not E.164.
    """
    tail, *grouped = search_queries(e164)
    return re.sub(r"\D+", "%", grouped[0]) if grouped else tail


def _suffix_holding(text: str, count: int) -> str:
    """The shortest end of ``text`` that holds its last ``count`` digits, from a digit on."""
    seen = 0
    for index in range(len(text) - 1, -1, -1):
        if text[index].isdigit():
            seen += 1
            if seen == count:
                return text[index:]
    return text.lstrip("+ ")
