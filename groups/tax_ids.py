"""Tax ID validation per country with python-stdnum.

An EU VAT number (it starts with a member state's prefix: DE, FR, EL, XI, …) is checked with
`stdnum.eu.vat` whatever the group's country; otherwise the number is checked with the module
stdnum has for the group's country: the US EIN, or that country's VAT number, or its TIN. Where
stdnum knows no number for the country, only the characters and the length are checked (by the
form). The error carries stdnum's description of the number as a format hint.
"""

from __future__ import annotations

from typing import Any

from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.us import ein as us_ein

# Prefixes of EU VAT numbers: the member states' ISO codes, but EL for Greece (and XI for
# Northern Ireland, already among stdnum's member states).
EU_VAT_PREFIXES = frozenset((eu_vat.MEMBER_STATES - {"gr"}) | {"el"})
# Business numbers where stdnum's generic lookup would pick a personal one (us.tin accepts SSNs).
COUNTRY_MODULES: dict[str, Any] = {"us": us_ein}


class TaxIdError(ValueError):
    """The tax ID is not a valid number of its kind; the message says why and what is expected."""


def tax_id_module(tax_id: str, country: str) -> Any | None:
    """The stdnum module that checks `tax_id` of a group in `country`, or None if none fits."""
    prefix = tax_id[:2].lower()
    if prefix.isalpha() and prefix in EU_VAT_PREFIXES:
        return eu_vat
    cc = country.lower()
    if not cc:
        return None
    if cc in COUNTRY_MODULES:
        return COUNTRY_MODULES[cc]
    return get_cc_module(cc, "vat") or get_cc_module(cc, "tin")


def format_hint(module: Any, tax_id: str) -> str:
    """The first line of the module's description, e.g. "EIN (U.S. Employer Identification Number)."

    For an EU VAT number, the description of the member state's number (its prefix's).
    """
    if module is eu_vat:
        prefix = tax_id[:2].lower()
        module = get_cc_module({"el": "gr", "xi": "gb"}.get(prefix, prefix), "vat") or eu_vat
    return (module.__doc__ or "").strip().splitlines()[0].strip()


def validate_tax_id(tax_id: str, country: str, examples: dict[str, str] | None = None) -> None:
    """Raise TaxIdError if stdnum has a check for this number and it fails.

    `examples` (country code → a sample number) adds an example to the message.
    """
    module = tax_id_module(tax_id, country)
    if module is None:
        return
    example_country = tax_id[:2].upper() if module is eu_vat else country.upper()
    example = (examples or {}).get({"EL": "GR"}.get(example_country, example_country))
    try:
        module.validate(tax_id)
    except StdnumError as exc:
        hint = format_hint(module, tax_id)
        reason = str(getattr(exc, "message", "") or exc)
        message = f"This is not a valid {hint.rstrip('.')}: {reason}"
        if example:
            message += f" Expected {example}."
        raise TaxIdError(message) from None
