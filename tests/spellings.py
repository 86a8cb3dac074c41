"""Every way of spelling a path that the front door must either route as the path itself or
refuse (issue 13): used by the front door's tests and the hostile-input suite."""

from __future__ import annotations

# The kinds nginx forwards as the route itself (it merges slashes, resolves dot segments,
# decodes escaped letters and drops a trailing slash): there a key meets the route's rules.
CANONICALISED = ("slashes", "dot", "dot-dot", "escaped-dot", "trailing", "escaped-letter")


def spellings(path: str) -> list[tuple[str, str]]:
    """(kind, target) for every spelling of `path`, the path itself first: doubled and
    tripled slashes at each position, %2F and %2f, /./ and /x/../ (plain and escaped),
    a backslash, an escaped first letter (%XX and %xx) and upper case in each segment, a
    trailing slash, the whole path in upper case, and what leaves the route: a parent, a
    step above the root, a NUL, a path parameter."""
    segments = path.strip("/").split("/")

    def spelled(separators: dict[int, str] | None = None, parts: list[str] | None = None) -> str:
        return "".join(
            (separators or {}).get(i, "/") + part for i, part in enumerate(parts or segments)
        )

    out = [("exact", path)]
    for i, segment in enumerate(segments):
        out += [("slashes", spelled({i: "//"})), ("slashes", spelled({i: "///"}))]
        out += [("encoded-slash", spelled({i: "%2F"})), ("encoded-slash", spelled({i: "%2f"}))]
        out += [("dot", spelled({i: "/./"})), ("dot-dot", spelled({i: "/elsewhere/../"}))]
        out += [("escaped-dot", spelled({i: "/%2e/"})), ("escaped-dot", spelled({i: "/x/%2E%2E/"}))]
        if i:
            out.append(("backslash", spelled({i: "\\"})))
        for escape in (f"%{ord(segment[0]):02X}", f"%{ord(segment[0]):02x}"):
            escaped = [*segments[:i], escape + segment[1:], *segments[i + 1 :]]
            out.append(("escaped-letter", spelled(parts=escaped)))
        upper = [*segments[:i], segment.upper(), *segments[i + 1 :]]
        out.append(("upper-case", spelled(parts=upper)))
    out += [("slashes", path + "//"), ("trailing", path + "/"), ("upper-case", path.upper())]
    out += [("above-root", "/.." + path), ("parent", path + "/.."), ("dot", path + "/.")]
    out += [("nul", path + "%00"), ("parameter", path + ";x=1"), ("query", path + "?")]
    return out
