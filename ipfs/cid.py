"""CID text forms. Kubo prints CIDv1 in base32 and js-ipfs in base58btc; the store keeps base32
so the same content always has the same text."""

from __future__ import annotations

import base64
from typing import Final

_B58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58)}


def _b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        num = num * 58 + _B58_INDEX[ch]
    raw = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + raw


def normalize_cid(cid: str) -> str:
    """A CIDv1 in base32 (``b...``); CIDv0 (``Qm...``) and base32 CIDs are returned as they are."""
    if cid.startswith("z"):
        try:
            raw = _b58decode(cid[1:])
        except KeyError:
            return cid
        return "b" + base64.b32encode(raw).decode().lower().rstrip("=")
    if cid.startswith("B"):
        return "b" + cid[1:].lower()
    return cid
