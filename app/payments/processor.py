"""The simulated card processor: accepts ``APP_PAYMENT_SUCCESS_RATE`` of the charges.

Each decision is a pure function of ``APP_PAYMENT_SEED``, the user and the charge's
idempotency key (or the payment's id when it has none): SHA-256 of them, read as a number
in [0, 1), is compared with the rate. So tests (and a retry) see the same answer every
time, while over many charges the share accepted is the rate (seed: 0.8). It is part of
the product, standing in for a third party we do not run; it is not a test double.
"""

from __future__ import annotations

import hashlib

DECLINED = "declined by the processor (simulated)"


def _digest(seed: str, user_id: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{user_id}\x00{key}".encode()).digest()


def draw(seed: str, user_id: int, key: str) -> float:
    """A number in [0, 1), uniform over seeds and keys."""
    return int.from_bytes(_digest(seed, user_id, key)[:8], "big") / 2**64


def accepts(seed: str, user_id: int, key: str, success_rate: float) -> bool:
    return draw(seed, user_id, key) < success_rate


def transaction_id(seed: str, user_id: int, key: str) -> str:
    return "txn_" + _digest(seed, user_id, key)[8:20].hex()
