"""The terms of a charge that orders and payments share: payment methods and currencies."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import Field


class PaymentMethod(StrEnum):
    """The methods the (simulated) processor takes; the seed's example is ``credit_card``."""

    CREDIT_CARD = "credit_card"
    DEBIT_CARD = "debit_card"
    BANK_TRANSFER = "bank_transfer"
    DIGITAL_WALLET = "digital_wallet"


DEFAULT_PAYMENT_METHOD = PaymentMethod.CREDIT_CARD

# ISO 4217 codes of currencies whose minor unit is the cent (two decimal places), which is
# what every amount here is: a code outside the list is refused rather than mis-scaled.
CurrencyCode = Literal[
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD",
    "INR", "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "USD", "ZAR",
]  # fmt: skip
CURRENCY_CODES: tuple[str, ...] = get_args(CurrencyCode)
DEFAULT_CURRENCY = "USD"

Currency = Annotated[
    CurrencyCode, Field(description="ISO 4217 code (upper case) of a currency with cents")
]
