#!/usr/bin/env python3
"""Writes tests/vectors/checksums.json: known answers for the record checksum of SPEC.md §1.1.

The checksum of a record is the lowercase hex BLAKE3 of the canonical JSON (RFC 8785) of
{"name", "entity", "instance"} (an absent instance is {}). The answers here are computed
independently of Tributary, with the `rfc8785` and `blake3` packages from PyPI (versions pinned
in tests/python/requirements.txt):

    python3 -m pip install -r tests/python/requirements.txt
    python3 tests/vectors/make_checksums.py > tests/vectors/checksums.json

Each case's record is kept exactly as written below (number spellings such as `1E30` or `4.50`
and string escapes included), so an implementation is tested on parsing JSON text as well as on
canonicalising it. Tributary's Rust unit test (crates/core/src/checksum.rs) and the Python
client test (tests/python/client_test.py) check every case.
"""

import json
import struct
import sys

import blake3
import rfc8785


def double(bits):
    """The shortest JSON text of the IEEE 754 double with these bits (Python's repr)."""
    return repr(struct.unpack(">d", bytes.fromhex(bits))[0])


# RFC 8785 Appendix B: the IEEE 754 values of the number serialisation table (NaN and
# Infinity are left out: JSON cannot hold them).
APPENDIX_B = [
    "0000000000000000", "8000000000000000", "0000000000000001", "8000000000000001",
    "7fefffffffffffff", "ffefffffffffffff", "4340000000000000", "c340000000000000",
    "4430000000000000", "44b52d02c7e14af5", "44b52d02c7e14af6", "44b52d02c7e14af7",
    "444b1ae4d6e2ef4e", "444b1ae4d6e2ef4f", "444b1ae4d6e2ef50", "3eb0c6f7a0b5ed8c",
    "3eb0c6f7a0b5ed8d", "41b3de4355555553", "41b3de4355555554", "41b3de4355555555",
    "41b3de4355555556", "41b3de4355555557", "becbf647612f3696", "43143ff3c1cb0959",
]

CASES = [
    (
        "key order and whitespace do not matter",
        """{ "name" : "Germany",
             "instance": {"z": 1, "a": 2},
             "entity": {"population": 83000000, "code": "DE", "area": 357022.5} }""",
    ),
    (
        "an absent instance is {}",
        '{"name": "No instance", "entity": {"code": "XX"}}',
    ),
    (
        "1e21 and its neighbours: integers print in full below 1e21, in exponent form from it",
        '{"name": "1e21", "entity": {"big": 1e21, "below": 9.999999999999999e20,'
        ' "twenty_zeros": 1e20, "huge": 1E30, "two_to_the_60": 1.152921504606846976e18}}',
    ),
    (
        "-0.0 is 0",
        '{"name": "minus zero", "entity": {"negative_zero": -0.0, "zero": 0,'
        ' "negative_zero_int": -0, "in_a_list": [-0.0, 0.0, -0]}}',
    ),
    (
        "0.1 and other decimals print in their shortest round-trip form",
        '{"name": "decimals", "entity": {"tenth": 0.1, "sum": 0.30000000000000004,'
        ' "third": 0.3333333333333333, "trailing_zero": 4.50, "one_point_zero": 1.0,'
        ' "small": 2e-3, "millionth": 0.000001, "ten_millionth": 1e-7}}',
    ),
    (
        "integers up to 2^53 print as integers",
        '{"name": "integers", "entity": {"max_safe": 9007199254740991,'
        ' "min_safe": -9007199254740991, "two_to_the_53": 9007199254740992.0,'
        ' "negative": -42}}',
    ),
    (
        "non-ASCII and emoji keys sort by UTF-16 code units, not code points",
        '{"name": "Zürich 東京 🚀", "entity": {"ö": 1, "€": 2, "😀": 3, "דּ": 4, "a": 5,'
        ' "Z": 6, "é": 7, "e\\u0301": 8}, "instance": {"日本": "にほん", "🚀": "rocket"}}',
    ),
    (
        "escapes: only quote, backslash and control characters are escaped",
        r'{"name": "tab\there \"quoted\" back\\slash \/ \u0001 \u001f \u007f \u2028",'
        r' "entity": {"line\nbreak": "carriage\rreturn", "ctl": "\b\f\u0019\u000b",'
        r' "unicode_escape": "\u00e9\u20ac\ud83d\ude00", "slash": "a/b"}}',
    ),
    (
        "nested arrays and objects keep array order and sort every object",
        '{"name": "nested", "entity": {"matrix": [[1, 2.5, [true, null, []]], [],'
        ' [{"b": 1, "a": [{}]}]], "empty": {}, "deep": {"z": {"y": {"x": [[["w"]]]}}}},'
        ' "instance": {"list": [3, 1, 2]}}',
    ),
    (
        "RFC 8785 section 3.2.2 example",
        r"""{"name": "RFC 8785 3.2.2", "entity": {
             "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
             "literals": [null, true, false]}}""",
    ),
    (
        "RFC 8785 section 3.2.3 sorting example",
        r"""{"name": "RFC 8785 3.2.3", "entity": {
             "\u20ac": "Euro Sign",
             "\r": "Carriage Return",
             "\ufb33": "Hebrew Letter Dalet With Dagesh",
             "1": "One",
             "\ud83d\ude00": "Emoji: Grinning Face",
             "\u0080": "Control",
             "\u00f6": "Latin Small Letter O With Diaeresis"}}""",
    ),
    (
        "RFC 8785 Appendix B number serialisation table",
        '{"name": "RFC 8785 Appendix B", "entity": {"numbers": ['
        + ", ".join(double(b) for b in APPENDIX_B)
        + "]}}",
    ),
]


def canonical_record(record):
    whole = {
        "name": record["name"],
        "entity": record["entity"],
        "instance": record.get("instance", {}),
    }
    return rfc8785.dumps(whole)


def main():
    out = ['{\n  "about": ' + json.dumps(__doc__.strip().splitlines()[0]) + ",\n"]
    out.append('  "generated_by": "tests/vectors/make_checksums.py",\n  "vectors": [\n')
    for i, (case, text) in enumerate(CASES):
        record = json.loads(text)
        canonical = canonical_record(record)
        # The record is written as given, on one line, so its spelling is what is tested.
        one_line = " ".join(line.strip() for line in text.splitlines())
        out.append("    {\n")
        out.append(f'      "case": {json.dumps(case)},\n')
        out.append(f'      "record": {one_line},\n')
        out.append(f'      "canonical": {json.dumps(canonical.decode("utf-8"), ensure_ascii=False)},\n')
        out.append(f'      "checksum": "{blake3.blake3(canonical).hexdigest()}"\n')
        out.append("    }" + ("," if i + 1 < len(CASES) else "") + "\n")
    out.append("  ]\n}\n")
    text = "".join(out)
    # The file must itself be JSON whose records parse to the same values.
    parsed = json.loads(text)
    for vector, (_, case_text) in zip(parsed["vectors"], CASES):
        assert canonical_record(vector["record"]) == canonical_record(json.loads(case_text))
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
