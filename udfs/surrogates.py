"""Deterministic fictitious values for detected PII.

The same original value maps to the same surrogate within one user's history, and to unrelated
surrogates for different users: the generator is seeded with HMAC-SHA256(salt, user, type,
canonical value). Without the salt (a secret, never in code) the mapping cannot be recomputed
or inverted. Surrogates keep the kind and the shape of the original: a first name becomes a first
name, a phone number keeps its punctuation and length, a card number stays Luhn-valid, an IBAN
keeps its country and a valid checksum, an SSN lands in the never-issued 9xx area.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import string

from faker import Faker

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)


def _canon(etype: str, value: str) -> str:
    v = value.strip()
    if etype in ("PHONE_NUMBER", "US_SSN", "CREDIT_CARD"):
        return re.sub(r"\D", "", v)
    if etype == "IBAN_CODE":
        return re.sub(r"\s", "", v).upper()
    return re.sub(r"\s+", " ", v).lower()


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def _iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    num = "".join(str(int(c, 36)) for c in rearranged)
    return f"{98 - int(num) % 97:02d}"


class Surrogates:
    def __init__(self, salt: bytes, locale: str = "en_US"):
        if not salt:
            raise ValueError("a non-empty salt is required for surrogate generation")
        self._salt = salt
        self._fake = Faker(locale)

    def _rng(self, *parts: str) -> random.Random:
        digest = hmac.new(self._salt, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _faker(self, *parts: str) -> Faker:
        self._fake.seed_instance(self._rng(*parts).getrandbits(64))
        return self._fake

    def replace(self, user: str, etype: str, value: str) -> str:
        out = self._make(user, etype, value)
        if _canon(etype, out) == _canon(etype, value):  # astronomically rare: never echo the original
            out = self._make(user, etype, value + "\x00")
        return out

    def _make(self, user: str, etype: str, value: str) -> str:
        key = _canon(etype, value)
        if etype == "PERSON":
            return self._person(user, value)
        if etype in ("PHONE_NUMBER", "US_SSN", "CREDIT_CARD"):
            return self._digits(user, etype, key, value)
        if etype == "IBAN_CODE":
            return self._iban(user, key, value)
        f = self._faker(user, etype, key)
        if etype == "EMAIL_ADDRESS":
            return f"{f.user_name()}@{f.free_email_domain()}"
        if etype == "IP_ADDRESS":
            return f.ipv6() if ":" in value else f.ipv4_public()
        if etype == "URL":
            return f"{f.domain_name()}/{f.user_name()}"
        if etype == "STREET_ADDRESS":
            return f.street_address() + (f", {f.city()}" if "," in value else "")
        if etype == "LOCATION":
            return f.city()
        return f.word()

    def _person(self, user: str, value: str) -> str:
        """Token by token, so "Anna" alone and "Anna Berg" share the fake first name."""
        words = list(_WORD.finditer(value))
        if not words:
            return self._faker(user, "PERSON", value.lower()).first_name()
        out, pos = [], 0
        for i, m in enumerate(words):
            tok = m.group(0)
            f = self._faker(user, "PERSON_TOKEN", str(i == 0), tok.lower())
            new = f.first_name() if i == 0 else f.last_name()
            if tok.isupper() and len(tok) > 1:
                new = new.upper()
            elif tok.islower():
                new = new.lower()
            out.append(value[pos:m.start()])
            out.append(new)
            pos = m.end()
        out.append(value[pos:])
        return "".join(out)

    def _digits(self, user: str, etype: str, key: str, value: str) -> str:
        rng = self._rng(user, etype, key)
        digits = [rng.choice(string.digits) for _ in key]
        if etype == "US_SSN" and len(digits) >= 3:
            digits[0] = "9"  # 900-999: never issued as Social Security area numbers
        if etype == "CREDIT_CARD" and len(digits) >= 2:
            digits[0] = "4"
            digits[-1] = _luhn_digit("".join(digits[:-1]))
        if etype == "PHONE_NUMBER" and digits and key and key[0] != "0":
            digits[0] = rng.choice("23456789")
        it = iter(digits)
        return "".join(next(it) if c.isdigit() else c for c in value)

    def _iban(self, user: str, key: str, value: str) -> str:
        rng = self._rng(user, "IBAN_CODE", key)
        country = key[:2] if key[:2].isalpha() else "DE"
        bban = "".join(rng.choice(string.digits) if c.isdigit() else rng.choice(string.ascii_uppercase) for c in key[4:])
        new = country + _iban_check(country, bban) + bban
        it = iter(new)
        return "".join(next(it) if not c.isspace() else c for c in value.strip())
