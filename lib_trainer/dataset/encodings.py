"""Which encoding a folder's caption files are in: UTF-8, or GBK/GB18030, Big5, Shift-JIS,
EUC-KR, UTF-16 and the like, as other tools and older systems save them.

A single short caption is too little to tell (three GBK tags look like UTF-16 to a
detector), so the captions of a folder that are not UTF-8 are judged together: their bytes,
joined, are long enough for a sure verdict, and a file that verdict does not read cleanly gets
a guess of its own. Each candidate reading is scored by charset-normalizer's mess ratio (a
small pure-Python package the WebUI already has through requests) plus its share of characters
such text seldom holds; without the package, other encodings are reported as unknown.

Some GBK text happens to be valid UTF-8 (`微笑, 猫, 学校` reads as `Ϣ…Ц, è, ѧУ`): such a file
is flagged when its UTF-8 reading is garbled and a CJK encoding reads it cleanly.
"""
from __future__ import annotations

import codecs

# What a caption file can plausibly be in besides UTF-8 (Python codec names).
CANDIDATES = ("gb18030", "big5", "cp932", "euc_kr", "utf_16_le", "utf_16_be", "cp1252", "cp1251")
# Encodings whose bytes can also be valid UTF-8 by chance (two-byte CJK encodings).
_LOOKALIKES = ("gb18030", "big5", "cp932", "euc_kr")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
UTF8 = ("utf-8", "utf-8-sig")
UNKNOWN = "unknown"
_NAMES = {"gb18030": "GB18030 (GBK)", "big5": "Big5", "cp932": "Shift-JIS", "euc_kr": "EUC-KR",
          "utf_16_le": "UTF-16", "utf_16_be": "UTF-16", "utf-16": "UTF-16", "utf-32": "UTF-32",
          "cp1252": "Windows-1252", "cp1251": "Windows-1251", "utf-8": "UTF-8", "utf-8-sig": "UTF-8"}


def display_name(encoding: str) -> str:
    return _NAMES.get(encoding, encoding)


def detector_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("charset_normalizer") is not None


def _mess(text: str) -> float:
    """How garbled a text looks (0 = clean), by charset-normalizer's measure."""
    from charset_normalizer.md import mess_ratio

    return mess_ratio(text, 1.0)


def _rare(char: str, encoding: str) -> bool:
    """A character that text in `encoding` seldom has, but a misreading often gives: the
    private use area, half-width katakana, compatibility ideographs; for Chinese a character
    outside the common level of GB2312 / Big5, for Japanese outside JIS level 1, for Korean
    hanja (modern captions are hangul)."""
    code = ord(char)
    if 0xE000 <= code <= 0xF8FF or 0xFF61 <= code <= 0xFF9F or 0xF900 <= code <= 0xFAFF:
        return True
    ideograph = 0x4E00 <= code <= 0x9FFF
    common_level = {"gb18030": ("gb2312", 0xD8), "big5": ("big5", 0xC9), "cp932": ("euc_jp", 0xD0)}.get(encoding)
    if common_level is not None:
        try:
            data = char.encode(common_level[0])
        except UnicodeEncodeError:
            return True
        return len(data) == 2 and data[0] >= common_level[1] and (ideograph or encoding != "cp932")
    return encoding == "euc_kr" and ideograph


def _score(text: str, encoding: str) -> float:
    """Lower is likelier: charset-normalizer's mess ratio plus the share of rare characters
    (the mess ratio alone cannot tell GBK from EUC-KR on three tags)."""
    wide = [char for char in text if ord(char) > 127]
    return _mess(text) + sum(_rare(char, encoding) for char in wide) / max(1, len(wide))


def _guess(data: bytes) -> str:
    """The likeliest of CANDIDATES that decodes `data` (ties go to the earlier one)."""
    if not detector_available():
        return UNKNOWN
    pool = CANDIDATES if b"\x00" in data else tuple(c for c in CANDIDATES if not c.startswith("utf_16"))
    scored = [(_score(data.decode(encoding), encoding), index, encoding)
              for index, encoding in enumerate(pool) if _decodes(data, encoding)]
    return min(scored)[2] if scored else UNKNOWN


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
        return True
    except (UnicodeDecodeError, LookupError):
        return False


def misread_utf8(data: bytes) -> str | None:
    """For bytes that are valid UTF-8: the CJK encoding they really are in, when their UTF-8
    reading is garbled and that encoding reads them cleanly; None for real UTF-8 text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if text.isascii() or not detector_available():
        return None
    garbled = _mess(text)
    if garbled < 0.2:
        return None
    readings = [(_score(data.decode(encoding), encoding), encoding) for encoding in _LOOKALIKES
                if _decodes(data, encoding)]
    best = min(readings, default=None)
    return best[1] if best is not None and best[0] < garbled / 4 else None


def detect_encodings(files: dict[str, bytes]) -> dict[str, str]:
    """The encoding of each caption (path -> bytes) of one folder: "utf-8" or "utf-8-sig" for
    UTF-8, a BOM's encoding, else the folder's verdict or the file's own guess ("unknown" when
    no detector is installed). UTF-8 that is really GBK & co. gets that encoding."""
    verdicts: dict[str, str] = {}
    others: dict[str, bytes] = {}
    for path, data in files.items():
        bom = next((encoding for mark, encoding in _BOMS if data.startswith(mark)), None)
        if bom is not None:
            verdicts[path] = bom
        elif b"\x00" in data:  # UTF-16 without a mark (often valid UTF-8 too); joining would shift it
            verdicts[path] = _guess(data)
        elif _decodes(data, "utf-8"):
            verdicts[path] = misread_utf8(data) or "utf-8"
        else:
            others[path] = data
    if others:
        folder = _guess(b"\n".join(others.values()))
        for path, data in others.items():
            verdicts[path] = folder if _fits(data, folder) else _guess(data)
    return verdicts


def _fits(data: bytes, encoding: str) -> bool:
    """The folder's verdict reads this file cleanly (else the file gets a guess of its own)."""
    return encoding != UNKNOWN and _decodes(data, encoding) and _score(data.decode(encoding), encoding) < 0.5


def decode(data: bytes, encoding: str) -> str:
    """The text of a caption in its detected encoding (a BOM is dropped)."""
    if encoding == UNKNOWN:
        raise UnicodeDecodeError("unknown", data, 0, len(data), "encoding not detected")
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def describe(problems: dict[str, str], limit: int = 10) -> str:
    """`a.txt (GB18030 (GBK)), b.txt (Big5) and 3 more` for a message."""
    names = [f"{path} ({display_name(encoding)})" for path, encoding in sorted(problems.items())]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
