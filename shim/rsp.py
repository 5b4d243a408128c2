"""@response files: read and split them for analysis, never rewrite them.

The tool always gets the original `@file` argument: Bazel writes params files one
argument per line without quoting, and only the tool's own parser may decide what
a line with a space means. Shim splits a file's text only to learn what the step
does (compile or link, which outputs), with the quoting of the tool's family:

- "gcc": libiberty's buildargv (gcc, clang, GNU ar/ld): whitespace separates;
  '...' and "..." group; a backslash takes the next character literally, even
  inside quotes; an @file inside an @file is expanded too.
- "msvc": CommandLineToArgvW (cl, link, lib): whitespace separates; "..." groups;
  2n backslashes before a quote give n backslashes and a quote that toggles
  grouping, 2n+1 give n and a literal quote; other backslashes are literal.
- "lines": rustc's @argfiles: one argument per line, no quoting, no nesting.
"""

from shim import host
from shim.exit_status import BAD_INPUT, ShimError

MAX_NESTING = 10
_SPACE = " \t\n\r\f\v"


def read_text(path: str, argument: str) -> str:
    """The text of response file *path* (BOM-aware: msvc tools write UTF-16)."""
    try:
        data = host.read_file(path)
    except OSError as e:
        raise ShimError("cannot read response file %r (argument %s): %s"
                        % (path, argument, e.strerror or e), BAD_INPUT) from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ShimError("response file %r (argument %s) starts with a UTF-16 byte order mark but is "
                            "not UTF-16: %s at byte %d" % (path, argument, e.reason, e.start), BAD_INPUT) from None
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def split_gcc(text: str, origin: str) -> list:
    """Split *text* as libiberty's buildargv does; *origin* names it in errors."""
    args = []
    i, n = 0, len(text)
    line = 1
    while i < n:
        while i < n and text[i] in _SPACE:
            if text[i] == "\n":
                line += 1
            i += 1
        if i >= n:
            break
        arg = []
        quote = ""
        quote_line = line
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 < n:
                    arg.append(text[i + 1])
                    if text[i + 1] == "\n":
                        line += 1
                i += 2
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    arg.append(c)
                    if c == "\n":
                        line += 1
            elif c in "'\"":
                quote, quote_line = c, line
            elif c in _SPACE:
                break
            else:
                arg.append(c)
            i += 1
        if quote:
            raise ShimError("unterminated %s quote in response file %s, line %d"
                            % (quote, origin, quote_line), BAD_INPUT)
        args.append("".join(arg))
    return args


def split_msvc(text: str, origin: str) -> list:
    """Split *text* as CommandLineToArgvW does; *origin* names it in errors."""
    args = []
    i, n = 0, len(text)
    line = 1
    while i < n:
        while i < n and text[i] in _SPACE:
            if text[i] == "\n":
                line += 1
            i += 1
        if i >= n:
            break
        arg = []
        quoted = False
        quote_line = line
        while i < n:
            c = text[i]
            if c == "\\":
                j = i
                while j < n and text[j] == "\\":
                    j += 1
                count = j - i
                if j < n and text[j] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:
                        arg.append('"')
                        i = j + 1
                    else:
                        i = j       # the quote is handled below
                    continue
                arg.append("\\" * count)
                i = j
                continue
            if c == '"':
                if quoted and i + 1 < n and text[i + 1] == '"':
                    arg.append('"')        # "" inside quotes: a literal quote
                    i += 2
                    continue
                quoted = not quoted
                if quoted:
                    quote_line = line
                i += 1
                continue
            if not quoted and c in _SPACE:
                break
            if c == "\n":
                line += 1
            arg.append(c)
            i += 1
        if quoted:
            raise ShimError('unterminated " quote in response file %s, line %d'
                            % (origin, quote_line), BAD_INPUT)
        args.append("".join(arg))
    return args


def split_lines(text: str, origin: str) -> list:
    """Split *text* as rustc reads an @argfile: one argument per line, taken as it is."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()                      # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


SPLITTERS = {"gcc": split_gcc, "msvc": split_msvc, "lines": split_lines}


def expand(args, quoting: str, cwd: str):
    """(args with every @file replaced by its contents, tuple of the @file paths read).

    *args* are a tool's arguments without argv[0]. gcc quoting expands nested
    @files (as gcc does); msvc tools do not nest them.
    """
    if not any(a[:1] == "@" for a in args):
        return list(args), ()
    split = SPLITTERS[quoting]
    files = []
    out = []
    _expand_into(out, files, args, split, quoting == "gcc", cwd, 0, None)
    return out, tuple(files)


def _expand_into(out, files, args, split, nest, cwd, depth, parent):
    for index, arg in enumerate(args, 1):
        if arg[:1] != "@" or len(arg) == 1 or (depth and not nest):
            out.append(arg)
            continue
        name = arg[1:]
        path = name if host.is_absolute(name) else host.join(cwd, name)
        where = "%d: %s" % (index, arg) if parent is None else "%s in %s" % (arg, parent)
        if depth >= MAX_NESTING:
            raise ShimError("response files nested more than %d deep (%s)" % (MAX_NESTING, where), BAD_INPUT)
        files.append(name)
        _expand_into(out, files, split(read_text(path, where), name), split, nest, cwd, depth + 1, name)
