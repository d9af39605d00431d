#!/usr/bin/env python3
"""Independent computation of vector F in tests/VECTORS.md: the whole path of a secret chat,
exponent -> g_a/g_b -> key -> fingerprint -> the `data` of a first application message, in
both directions.

Written from Telegram's documentation (core.telegram.org/api/end-to-end, /mtproto/description),
not from secret-core: Python's pow, hashlib, and AES-ECB from `cryptography` with IGE chaining
by hand, TL encoded by hand. Run: `python3 gen_chat_path.py` (needs `pip install cryptography`).
"""
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

P = int(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b",
    16,
)
G = 3


def stream(label: str, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(label.encode() + struct.pack("<I", i)).digest()
        i += 1
    return out[:n]


def minimal_be(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def tl_bytes(b: bytes) -> bytes:
    assert len(b) < 254
    out = bytes([len(b)]) + b
    return out + b"\0" * (-len(out) % 4)


def set_ttl_service(random_id: int, ttl: int) -> bytes:
    # decryptedMessageService#73164160 random_id:long action:DecryptedMessageAction
    # decryptedMessageActionSetMessageTTL#a1733aec ttl_seconds:int
    return struct.pack("<Iq", 0x73164160, random_id) + struct.pack("<Ii", 0xA1733AEC, ttl)


def layer(random_bytes: bytes, lay: int, in_seq: int, out_seq: int, message: bytes) -> bytes:
    # decryptedMessageLayer#1be31789 random_bytes:bytes layer:int in_seq_no:int out_seq_no:int
    return (
        struct.pack("<I", 0x1BE31789)
        + tl_bytes(random_bytes)
        + struct.pack("<iii", lay, in_seq, out_seq)
        + message
    )


def ige_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    c_prev, p_prev = iv[:16], iv[16:]
    out = b""
    for i in range(0, len(data), 16):
        p = data[i : i + 16]
        x = bytes(a ^ b for a, b in zip(p, c_prev))
        c = bytes(a ^ b for a, b in zip(ecb.update(x), p_prev))
        out += c
        c_prev, p_prev = c, p
    return out


def e2e_data(key: bytes, x: int, payload: bytes, padding: bytes) -> bytes:
    plain = struct.pack("<I", len(payload)) + payload + padding
    assert len(plain) % 16 == 0 and 12 <= len(padding) <= 1024
    msg_key = hashlib.sha256(key[88 + x : 88 + x + 32] + plain).digest()[8:24]
    a = hashlib.sha256(msg_key + key[x : x + 36]).digest()
    b = hashlib.sha256(key[40 + x : 40 + x + 36] + msg_key).digest()
    aes_key = a[:8] + b[8:24] + a[24:32]
    aes_iv = b[:8] + a[8:24] + b[24:32]
    fp = hashlib.sha1(key).digest()[12:20]
    return fp + msg_key + ige_encrypt(aes_key, aes_iv, plain)


def padding_for(payload: bytes, label: str) -> bytes:
    # The smallest valid padding (12..27 bytes): not our bucket rule, which any length may differ from.
    n = 12
    while (4 + len(payload) + n) % 16:
        n += 1
    return stream(label, n)


def main() -> None:
    a = int.from_bytes(stream("tgsecretd vector F: a", 256), "big")
    b = int.from_bytes(stream("tgsecretd vector F: b", 256), "big")
    g_a = pow(G, a, P)
    g_b = pow(G, b, P)
    key = pow(g_a, b, P).to_bytes(256, "big")
    assert key == pow(g_b, a, P).to_bytes(256, "big")
    fp = hashlib.sha1(key).digest()[12:20]
    print("a =", stream("tgsecretd vector F: a", 256).hex())
    print("b =", stream("tgsecretd vector F: b", 256).hex())
    print("g_a =", minimal_be(g_a).hex())
    print("g_b =", minimal_be(g_b).hex())
    print("key =", key.hex())
    print("key_fingerprint (bytes) =", fp.hex(), " as TL long =", struct.unpack("<q", fp)[0])
    # The creator's first application message (its NotifyLayer took out_seq_no 1): layer 73
    # (the peer's layer is not known yet), in_seq_no 0, out_seq_no 3, x = 0.
    rb_c = stream("tgsecretd vector F: creator random_bytes", 31)
    msg_c = set_ttl_service(0x0123456789ABCDEF, 30)
    pay_c = layer(rb_c, 73, 0, 3, msg_c)
    pad_c = padding_for(pay_c, "tgsecretd vector F: creator padding")
    print("creator random_bytes =", rb_c.hex())
    print("creator payload =", pay_c.hex())
    print("creator padding =", pad_c.hex())
    print("creator data =", e2e_data(key, 0, pay_c, pad_c).hex())
    # The acceptor's first application message (NotifyLayer took out_seq_no 0, nothing received
    # yet): layer 73, in_seq_no 1, out_seq_no 2, x = 8.
    rb_a = stream("tgsecretd vector F: acceptor random_bytes", 31)
    msg_a = set_ttl_service(-2, 86400)
    pay_a = layer(rb_a, 73, 1, 2, msg_a)
    pad_a = padding_for(pay_a, "tgsecretd vector F: acceptor padding")
    print("acceptor random_bytes =", rb_a.hex())
    print("acceptor payload =", pay_a.hex())
    print("acceptor padding =", pad_a.hex())
    print("acceptor data =", e2e_data(key, 8, pay_a, pad_a).hex())


if __name__ == "__main__":
    main()
