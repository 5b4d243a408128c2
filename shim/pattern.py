"""Shell-style wildcard matching (`*`, `?`, `[abc]`, `[!a-z]`) without importing re.

fnmatch compiles patterns with `re` (~3 ms to import); the hot path matches a handful of
short arguments and program names, for which this backtracking matcher is faster anyway.
"""


def is_pattern(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def match(name: str, pattern: str) -> bool:
    """True if *name* matches *pattern* as a whole (case-sensitive, `/` is not special)."""
    n = p = 0
    star_p = star_n = -1
    while n < len(name):
        if p < len(pattern):
            c = pattern[p]
            if c == "*":
                star_p, star_n = p, n
                p += 1
                continue
            if c == "?":
                n += 1
                p += 1
                continue
            if c == "[":
                end, ok = _bracket(pattern, p, name[n])
                if end is not None:
                    if ok:
                        n += 1
                        p = end
                        continue
                elif name[n] == "[":   # no closing ]: a literal [
                    n += 1
                    p += 1
                    continue
            elif c == name[n]:
                n += 1
                p += 1
                continue
        if star_p < 0:
            return False
        star_n += 1           # let the last * swallow one more character
        n, p = star_n, star_p + 1
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _bracket(pattern: str, start: int, ch: str):
    """(index after the closing `]`, whether *ch* is in the set) or (None, False)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    found = False
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return i + 1, found != negate
        first = False
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            if c <= ch <= pattern[i + 2]:
                found = True
            i += 3
        else:
            if c == ch:
                found = True
            i += 1
    return None, False
