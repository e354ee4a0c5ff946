"""The many small hostile requests of scenario 6, generated reproducibly: malformed JSON on every JSON route,
hostile uploads (traversal names and ids, NaN / Infinity / deep metadata, junk files), header and method junk,
and seeded mutations of valid bodies to reach the profile's count. The expensive ones (bombs, bodies past the
cap, 10^6-character queries) are built in ``corpus`` and sent by ``scenarios.hostile``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

TRAVERSAL_TOKEN = "pwnedzq"  # in every traversal file name, so that an escaped file can be found afterwards

JSON_ROUTES = ["/v1/search", "/v1/rerank", "/v2/rerank", "/rerank", "/v1/embeddings", "/v1/similarity"]


@dataclass
class Hostile:
    label: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    must_refuse: bool = False  # the issue says: 4xx at the door (a 202 is an accepted permanent error)


def _malformed() -> list[bytes]:
    long_number = b"9" * 100_000
    return [
        b"",
        b"{",
        b"}",
        b"[",
        b"null",
        b"true",
        b"1",
        b'"x"',
        b"[]",
        b"{}",
        b'{"query":}',
        b'{"query": "x",}',
        b'{"query": "x"',
        b"{'query': 'x'}",
        b'{query: "x"}',
        b'{"query": NaN}',
        b'{"query": "x", "top_k": NaN}',
        b'{"query": "x", "top_k": Infinity}',
        b'{"query": "x", "top_k": -Infinity}',
        b'{"query": "x", "top_k": 1e400}',
        b'{"query": "x", "top_k": -1}',
        b'{"query": "x", "top_k": 99999999999999999999999}',
        b'{"query": "x", "candidates": 1000000000}',
        b'{"query": "x", "top_k": ' + long_number + b"}",
        b'{"query": "x", "filters": []}',
        b'{"query": "x", "filters": {"a": {"b": 1}}}',
        b'{"query": "x", "filters": {"a": null}}',
        b'{"query": "x", "filters": {"a": [1, 2]}}',
        b'{"query": "x", "filters": {"a": NaN}}',
        b'{"query": "x", "filters": {"a": 1e400}}',
        b'{"query": "x", "filters": {"": "x"}}',
        b'{"query": "x", "filters": {"a\\u0000": "x"}}',
        b'{"query": "x", "mode": "sql"}',
        b'{"query": "x", "fusion": 5}',
        b'{"query": "x", "query": "y"}',
        b'\xef\xbb\xbf{"query": "x"}',
        b'{"query": "\xff\xfe"}',
        b'{"query": "\\ud800"}',
        b'{"query": "a\\u0000b"}',
        b'{"query": "\x00"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"query": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"query": "x", "instruction": "' + b"i" * 100_000 + b'"}',
        b'{"query": 5}',
        b'{"query": ["x"]}',
        b'{"query": {"$ne": null}}',
        b'{"query": "   "}',
        b'{"query": "x", "top_k": "5"}',
        b'{"query": "x", "top_k": true}',
        b'{"query": "x", "filters": {"k": "' + b"v" * 100_000 + b'"}}',
        b'{"query": "x", "filters": {' + b",".join(b'"k%d": 1' % i for i in range(10_000)) + b"}}",
        b'{"query": "x", "documents": []}',
        b'{"query": "x", "documents": [null]}',
        b'{"query": "x", "documents": [{"text": {}}]}',
        b'{"query": "x", "documents": ["a"], "top_n": -1}',
        b'{"query": "x", "documents": ' + json.dumps(["a"] * 1001).encode() + b"}",
        b'{"query": "x", "texts": ["a"], "truncation_direction": "middle"}',
        b'{"input": []}',
        b'{"input": [""]}',
        b'{"input": [[1, 2, 3]]}',
        b'{"input": "x", "dimensions": -5}',
        b'{"input": "x", "encoding_format": "hex"}',
        b'{"input": ' + json.dumps(["a"] * 3000).encode() + b"}",
        b'{"inputs": {"source_sentence": "x", "sentences": []}}',
        b'{"inputs": null}',
        b'{"inputs": {"source_sentence": null, "sentences": ["a"]}}',
        os.urandom(0) + bytes(range(256)),
    ]


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-16",
    "multipart/form-data",
    "",
]


def _multipart(name: str, data: bytes, **form: str) -> dict[str, Any]:
    return {"files": [("files", (name, data))], "data": form}


def uploads(rng: random.Random) -> list[Hostile]:
    body = b"# hostile\n\nA harmless paragraph about rivers and valleys.\n"
    out: list[Hostile] = []
    token = TRAVERSAL_TOKEN
    names = [
        f"../../{token}1.md",
        f"..\\..\\{token}2.txt",
        f"/etc/{token}3.md",
        "../" * 20 + f"{token}4.md",
        f"%2e%2e%2f{token}5.md",
        f"a/../../{token}6.md",
        f"....//....//{token}7.md",
        f"~/.ssh/{token}8.md",
        f"/tmp/{token}9.md",
        f"..%252f..%252f{token}10.md",
        f"C:\\Windows\\{token}11.txt",
        f"\\\\server\\share\\{token}12.md",
        f"./.././{token}13.md",
        f"{token}14.md/../../x.md",
        "CON.md",
        ".md",
        ".",
        "..",
        "x" * 10_000 + ".md",
        "\u202egnp.md",
        "ﬁle.md",
        "a\nb.md",
        'a"b.md',
        "a;b.md",
        "",
        " .md",
        "💣" * 300 + ".md",
        "a\x00b.md",
    ]
    for name in names:
        out.append(Hostile("traversal file name", "POST", "/v1/documents", _multipart(name, body)))
    ids = [
        f"../../{token}id1",
        f"/etc/{token}id2",
        "..",
        ".",
        f"a/../../{token}id3",
        "%2e%2e",
        f"\\..\\{token}id4",
        "x\x00y",
        "",
        " ",
        "\u202e",
        "\n",
        "a" * 257,
        "a" * 100_000,
        f"{token}/../../../id5",
    ]
    for document_id in ids:
        out.append(
            Hostile(
                "hostile document_id",
                "POST",
                "/v1/documents",
                _multipart("ok.md", body, document_id=document_id),
            )
        )
    out.append(
        Hostile(
            "document_id over the column (256 emoji)",
            "POST",
            "/v1/documents",
            _multipart("emoji.md", body, document_id="😀" * 256),
            must_refuse=True,
        )
    )
    for raw in ('{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', '{"x": 1e400}', '{"x": {"y": [NaN]}}'):
        out.append(
            Hostile(
                "non-finite metadata",
                "POST",
                "/v1/documents",
                _multipart("nan.md", body, metadata=raw),
                must_refuse=True,
            )
        )
    deep = '{"a":' * 50_000 + "1" + "}" * 50_000
    out.append(
        Hostile(
            "50,000-deep metadata",
            "POST",
            "/v1/documents",
            _multipart("deep.md", body, metadata=deep),
            must_refuse=True,
        )
    )
    for raw in (
        "[1, 2]",
        '"str"',
        "null",
        "{",
        "{" * 10,
        '{"a": "' + "v" * 1_000_000 + '"}',
        json.dumps({f"k{i}": i for i in range(20_000)}),
        '{"": 1}',
        '{"$where": "1"}',
        "\x00",
    ):
        out.append(
            Hostile("odd metadata", "POST", "/v1/documents", _multipart("meta.md", body, metadata=raw))
        )
    junk = [
        ("random.txt", os.urandom(4096)),
        ("random.pdf", b"%PDF-1.7\n" + os.urandom(4096)),
        ("notzip.docx", b"not a zip at all"),
        ("random.docx", b"PK\x03\x04" + os.urandom(4096)),
        ("empty.md", b""),
        ("blank.md", b" \n\t\n" * 100),
        ("tool.exe", b"MZ\x90\x00" * 100),
        ("noext", body),
        ("image.md", b"\x89PNG\r\n\x1a\n" + os.urandom(256)),
        ("utf16.txt", "plain text in UTF-16 without a BOM".encode("utf-16-le")),
        ("onetoken.txt", b"a" * 5_000_000),
        ("longline.md", b"word " * 1_000_000),
        ("hashes.md", b"#\n" * 500_000),
        ("attrs.html", b"<p " + b" ".join(b"a%d=1" % i for i in range(100_000)) + b">x</p>"),
        ("script.html", b"<script>" + b"x" * 1_000_000 + b"</script>"),
        ("table.html", b"<table>" + b"<tr><td>x</td></tr>" * 100_000 + b"</table>"),
        ("ctrl.txt", bytes(rng.randrange(0, 32) for _ in range(4096))),
    ]
    for name, data in junk:
        out.append(Hostile("junk file", "POST", "/v1/documents", _multipart(name, data)))
    out.append(
        Hostile(
            "101 files in one upload",
            "POST",
            "/v1/documents",
            {"files": [("files", (f"f{i}.md", body)) for i in range(101)]},
        )
    )
    out.append(
        Hostile(
            "same name twice",
            "POST",
            "/v1/documents",
            {"files": [("files", ("twice.md", body)), ("files", ("twice.md", body + b"x"))]},
        )
    )
    out.append(
        Hostile(
            "document_id with two files",
            "POST",
            "/v1/documents",
            {"files": [("files", ("a.md", body)), ("files", ("b.md", body))], "data": {"document_id": "x"}},
        )
    )
    for content_type, raw in (
        ("multipart/form-data", b'--x\r\nContent-Disposition: form-data; name="files"\r\n\r\nabc'),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=files; filename=a.md\r\n\r\nabc",
        ),
        ("multipart/form-data; boundary=" + "b" * 5000, b"--x--"),
        ("application/json", b'{"files": "x"}'),
        ("multipart/form-data; boundary=x", b"--x\r\n" * 50_000),
    ):
        out.append(
            Hostile(
                "malformed multipart",
                "POST",
                "/v1/documents",
                {"content": raw, "headers": {"Content-Type": content_type}},
            )
        )
    return out


def json_bodies() -> list[Hostile]:
    out = []
    for body in _malformed():
        for route in JSON_ROUTES:
            out.append(
                Hostile(
                    "malformed JSON",
                    "POST",
                    route,
                    {"content": body, "headers": {"Content-Type": "application/json"}},
                )
            )
    valid = json.dumps({"query": "river valley", "top_k": 3}).encode()
    for content_type in CONTENT_TYPES:
        for route in JSON_ROUTES:
            out.append(
                Hostile(
                    "content type",
                    "POST",
                    route,
                    {"content": valid, "headers": {"Content-Type": content_type}},
                )
            )
    return out


def odd_requests() -> list[Hostile]:
    out = [
        Hostile("wrong method", "GET", "/v1/search"),
        Hostile("wrong method", "PUT", "/v1/documents"),
        Hostile("wrong method", "PATCH", "/v1/jobs/x"),
        Hostile("wrong method", "DELETE", "/v1/search"),
        Hostile("long key", "GET", "/v1/documents", {"headers": {"Authorization": "Bearer " + "k" * 10_000}}),
        Hostile("many headers", "GET", "/v1/documents", {"headers": {f"X-H{i}": "v" for i in range(100)}}),
        Hostile("big header", "GET", "/v1/documents", {"headers": {"X-Big": "v" * 60_000}}),
        Hostile("long path", "GET", "/v1/documents/" + "a" * 10_000),
        Hostile("long query string", "GET", "/v1/documents", {"params": {"q": "x" * 60_000}}),
        Hostile("odd path", "GET", "/v1/documents/%ff%fe"),
        Hostile("odd path", "GET", "/v1/jobs/%00"),
        Hostile("odd path", "GET", "/v1/review/%00-%00"),
        Hostile("odd path", "GET", "/v1/review/99999999999999999999-1"),
        Hostile("odd path", "POST", "/v1/review/-1-1", {"json": {"none": True}}),
        Hostile(
            "odd params",
            "GET",
            "/v1/review",
            {"params": {"limit": "-1", "since": "NaN", "cursor": "x" * 1000}},
        ),
        Hostile(
            "odd params", "GET", "/v1/review/clusters", {"params": {"threshold": "NaN", "limit": "1e400"}}
        ),
        Hostile("odd params", "GET", "/v1/review/clusters", {"params": {"threshold": "-5", "min_size": "0"}}),
        Hostile("odd params", "GET", "/v1/review/export", {"params": {"since": "9999999999999999999999"}}),
        Hostile(
            "odd params",
            "POST",
            "/v1/review/claim",
            {"params": {"count": "100000000", "reviewer": "x" * 5000}},
        ),
    ]
    return out


def mutations(rng: random.Random, count: int) -> list[Hostile]:
    """Seeded byte-level mutations of valid bodies (flips, cuts, splices, junk inserts)."""
    seeds = [
        json.dumps(
            {"query": "river valley", "top_k": 3, "filters": {"batch": "a"}, "mode": "hybrid"}
        ).encode(),
        json.dumps({"query": "river", "documents": ["a", "b"], "top_n": 1}).encode(),
        json.dumps({"input": ["river", "valley"], "encoding_format": "base64"}).encode(),
    ]
    routes = ["/v1/search", "/v1/rerank", "/v1/embeddings"]
    out = []
    for n in range(count):
        which = n % len(seeds)
        data = bytearray(seeds[which])
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                data = data[:at]
            elif op == 2:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            else:
                data[at:at] = rng.choice(
                    [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"NaN", b"\x00", b"1e999"]
                )
        out.append(
            Hostile(
                "mutated body",
                "POST",
                routes[which],
                {"content": bytes(data), "headers": {"Content-Type": "application/json"}},
            )
        )
    return out


def all_inputs(count: int, seed: int = 6) -> list[Hostile]:
    """``count`` hostile requests: every upload and odd request, then malformed JSON (evenly thinned when
    ``count`` is small), then mutations up to ``count``."""
    rng = random.Random(seed)
    fixed = uploads(rng) + odd_requests()
    bodies = json_bodies()
    room = max(0, count - len(fixed))
    if room < len(bodies):
        step = len(bodies) / max(1, room)
        bodies = [bodies[int(i * step)] for i in range(room)]
    fixed += bodies
    return fixed + mutations(rng, max(0, count - len(fixed)))
