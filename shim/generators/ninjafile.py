"""The ninja manifest language (build.ninja), read losslessly and rewritten in place.

The lexer follows ninja 1.13's own (src/lexer.in.cc, src/manifest_parser.cc) rule by rule
and records every byte it consumes as a Token, a (kind, start, end) span of the text:
joining the tokens' text gives back the file, byte for byte, for every file ninja accepts
(`emit`). Values keep their pieces as spans too, so `rewrite_commands` replaces exactly the
bytes of a rule's `command` value and nothing else. Files are read as UTF-8 with
surrogateescape, so bytes that are not UTF-8 (a Latin-1 path) survive a rewrite.

What is checked: everything ninja's parser rejects as syntax, plus the rule and pool
structure (duplicate rules in a scope, unknown rules, variables a rule or pool may not
have, `command` and `depth` present, `rspfile` with `rspfile_content`). Graph-level
errors (unknown pools and default targets, outputs built twice, empty paths) and
`ninja_required_version` are left to ninja. Errors are `file:line: what`, status 65.

Scoping is ninja's: file-level variables are evaluated when they are read, in the scope
of their file (`include` shares it, `subninja` opens a child); a build statement's own
bindings are evaluated at that point too, in its file's scope; a rule's bindings are
evaluated per build statement, looking first at the statement's bindings, then the rule's,
then the file scopes as they stand once everything is read. `include` and `subninja` paths
are relative to the build directory, the directory of the top file (ninja's cwd).
"""

import bisect
import gc
import os
import re
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from shim.exit_status import BAD_INPUT, USAGE, ShimError

KEYWORDS = ("build", "rule", "pool", "default", "include", "subninja")
# The only variables a rule may set (Rule::IsReservedBinding).
RULE_BINDINGS = frozenset(("command", "depfile", "dyndep", "description", "deps", "generator",
                           "pool", "restat", "rspfile", "rspfile_content", "msvc_deps_prefix"))
# Variables a build statement gives its rule's bindings; they have no value at rule level.
EDGE_VARIABLES = frozenset(("in", "in_newline", "out"))
BUILTIN_POOLS = (("", 0), ("console", 1))     # name, depth (0: no limit)
MAX_INCLUDE_DEPTH = 64

_VARNAME = re.compile(r"[a-zA-Z0-9_.-]+")
_SIMPLE_VARNAME = re.compile(r"[a-zA-Z0-9_-]+")
_BRACED_VAR = re.compile(r"\$\{([a-zA-Z0-9_.-]+)\}")
_LITERAL = re.compile(r"[^$ :\r\n|\x00]+")
_COMMENT_LINE = re.compile(r"( *)(#[^\n\x00]*?)(\r?\n)")   # ninja: [ ]*"#"[^\000\n]*"\n"
# One token of ReadToken and the whitespace it eats after it. m.lastindex tells which:
# 1 newline, 2 indent, 3 spaces then newline, 4 indent then `$` newlines, 6 word, 8 punctuation.
_TOKEN = re.compile(r"(\r?\n)|( +)(?:(\r?\n)|((?:\$\r?\n *)+))?"
                    r"|([a-zA-Z0-9_.-]+)((?: +|\$\r?\n)*)|(\|@|\|\||[|=:])((?: +|\$\r?\n)*)")
_WHITESPACE = re.compile(r"(?: +|\$\r?\n)+")              # EatWhitespace: spaces, `$` newlines
_CONTINUATION = re.compile(r"\$\r?\n *")
_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")

# Token kinds as ninja names them in "expected X, got Y".
_TOKEN_NAMES = {"newline": "newline", "indent": "indent", "ident": "identifier", "equals": "'='",
                "colon": "':'", "pipe": "'|'", "pipe2": "'||'", "pipeat": "'|@'", "eof": "eof",
                "error": "lexing error"}
_TOKEN_NAMES.update((k, "'%s'" % k) for k in KEYWORDS)
_PUNCTUATION = {"|@": "pipeat", "||": "pipe2", "|": "pipe", "=": "equals", ":": "colon"}
# Tokens and pieces are made by the million in a large manifest: tuple.__new__ skips the
# Python-level __new__ of a NamedTuple.
_new = tuple.__new__


class Token(NamedTuple):
    """A span of the text: kind is one of newline, comment, space, indent, a keyword, ident,
    equals, colon, pipe, pipe2, pipeat, value (a binding's value), path, eof (the end, or
    what follows a NUL byte, which ends a manifest for ninja)."""
    kind: str
    start: int
    end: int


class Piece(NamedTuple):
    """One piece of a value: kind `text` (decoded text is the raw text), `escape` ($$, `$ `,
    $: give one character), `continuation` ($ newline and the next line's indentation: no
    text) or `var` ($name or ${name}; text is the name). start/end: the raw span."""
    kind: str
    text: str
    start: int
    end: int


class Segment(NamedTuple):
    """What a piece of a value turns into once evaluated (`EvalString.segments`).

    kind `text`: *text* is the file's text from *start* on, character for character;
    `escape`: *text* is one character written as two (`$$`, `$ `, `$:`) at *start*;
    `var`: *text* is the value of the variable written at *start* (only its first
    character has a place of its own in the file); `unknown`: a variable nothing in scope
    defines (a build statement may, or it is empty); *text* is its name.
    """
    kind: str
    text: str
    start: int


class EvalString:
    """A value or path as written: its pieces and its raw span (start, end) in the file."""

    __slots__ = ("pieces", "start", "end")

    def __init__(self, pieces: Tuple[Piece, ...], start: int, end: int) -> None:
        self.pieces = pieces
        self.start = start
        self.end = end

    def empty(self) -> bool:
        """True when the value has no text and no variable (ninja's EvalString::empty)."""
        return all(p.kind == "continuation" for p in self.pieces)

    def evaluate(self, lookup: Callable[[str], Optional[str]]) -> str:
        """The value with variables replaced by lookup(name); a None keeps the reference, as ${name}."""
        pieces = self.pieces
        if len(pieces) == 1 and pieces[0].kind == "text":
            return pieces[0].text
        out = []
        for piece in self.pieces:
            if piece.kind == "var":
                value = lookup(piece.text)
                out.append(value if value is not None else "${%s}" % piece.text)
            elif piece.kind != "continuation":
                out.append(piece.text)
        return "".join(out)

    def segments(self, lookup: Callable[[str], Optional[str]]) -> List[Segment]:
        """The evaluated value with where each part of it comes from (see Segment)."""
        out = []
        for piece in self.pieces:
            if piece.kind == "var":
                value = lookup(piece.text)
                out.append(Segment("unknown", piece.text, piece.start) if value is None
                           else Segment("var", value, piece.start))
            elif piece.kind != "continuation":
                out.append(Segment(piece.kind, piece.text, piece.start))
        return out

    def __repr__(self) -> str:
        return "EvalString(%r)" % (self.pieces,)


class Binding(NamedTuple):
    """`name = value` at file level, in a rule, a build statement or a pool; line is 1-based."""
    name: str
    value: EvalString
    line: int


class Scope:
    """Variables and rules visible in a file: the top file's scope, or a subninja's child."""

    __slots__ = ("parent", "variables", "rules")

    def __init__(self, parent: Optional["Scope"] = None) -> None:
        self.parent = parent
        self.variables: Dict[str, str] = {}
        self.rules: Dict[str, "Rule"] = {}

    def lookup(self, name: str) -> Optional[str]:
        """The variable's value here or in a parent scope, or None when nothing defines it."""
        scope = self
        while scope is not None:
            if name in scope.variables:
                return scope.variables[name]
            scope = scope.parent
        return None

    def lookup_rule(self, name: str) -> Optional["Rule"]:
        """The rule defined here or in a parent scope, or None."""
        scope = self
        while scope is not None:
            if name in scope.rules:
                return scope.rules[name]
            scope = scope.parent
        return None


class Rule:
    """`rule NAME` and its bindings, in the file and scope where it is defined."""

    __slots__ = ("name", "bindings", "file", "line", "scope")

    def __init__(self, name: str, bindings: Dict[str, Binding], file: Optional["NinjaFile"],
                 line: int, scope: Optional[Scope]) -> None:
        self.name = name
        self.bindings = bindings
        self.file = file
        self.line = line
        self.scope = scope

    def lookup(self, name: str, _seen: Tuple[str, ...] = ()) -> Optional[str]:
        """A variable as this rule's bindings see it before any build statement binds anything:
        the rule's own bindings (evaluated the same way), then its scope. None for $in, $out,
        $in_newline and for variables neither defines (build statements may set them)."""
        if name in EDGE_VARIABLES:
            return None
        binding = self.bindings.get(name)
        if binding is not None:
            if name in _seen:   # ninja stops a build with "cycle in rule variables"
                return None
            seen = _seen + (name,)
            return binding.value.evaluate(lambda var: self.lookup(var, seen))
        return self.scope.lookup(name) if self.scope is not None else None

    def evaluate(self, name: str) -> Optional[str]:
        """Binding *name* (None if the rule has none) with every variable the rule can resolve
        replaced by its value; the others ($in, $out, those build statements set) are kept as
        `${name}`."""
        binding = self.bindings.get(name)
        if binding is None:
            return None
        return binding.value.evaluate(lambda var: self.lookup(var, (name,)))

    def segments(self, name: str) -> List[Segment]:
        """Binding *name* evaluated as `evaluate` does, piece by piece (see Segment)."""
        binding = self.bindings.get(name)
        if binding is None:
            return []
        return binding.value.segments(lambda var: self.lookup(var, (name,)))

    def __repr__(self) -> str:
        return "Rule(%r, %s:%d)" % (self.name, self.file.path if self.file else "?", self.line)


class Build:
    """`build OUTPUTS | IMPLICIT_OUTPUTS: RULE INPUTS | IMPLICIT || ORDER_ONLY |@ VALIDATIONS`.

    `values` are the statement's own bindings and the paths are evaluated as ninja does when
    it reads them (bindings in the file's scope, then paths with the bindings too); paths
    are as written, not canonicalized."""

    __slots__ = ("rule", "outputs", "implicit_outputs", "inputs", "implicit", "order_only",
                 "validations", "bindings", "values", "line", "scope")

    def __init__(self, rule: str, line: int, scope: Scope) -> None:
        self.rule = rule
        self.line = line
        self.scope = scope
        self.outputs: List[str] = []
        self.implicit_outputs: List[str] = []
        self.inputs: List[str] = []
        self.implicit: List[str] = []
        self.order_only: List[str] = []
        self.validations: List[str] = []
        self.bindings: List[Binding] = []
        self.values: Dict[str, str] = {}

    def lookup(self, name: str) -> Optional[str]:
        """A variable as the statement's paths see it: its bindings, then its scope."""
        value = self.values.get(name)
        return value if value is not None else self.scope.lookup(name)


class Pool(NamedTuple):
    """`pool NAME` with its depth; line 0 for ninja's built-in pools."""
    name: str
    depth: int
    bindings: Tuple[Binding, ...]
    line: int


class Default(NamedTuple):
    """`default TARGETS`, the paths evaluated where the statement stands."""
    targets: Tuple[str, ...]
    line: int


class Include(NamedTuple):
    """`include PATH` (new_scope False) or `subninja PATH`; target is the file it reads."""
    path: str
    new_scope: bool
    line: int
    target: "NinjaFile"


class NinjaFile:
    """One file of a manifest: its text, its tokens (which cover the text exactly) and its
    statements (Binding for file-level variables, Rule, Build, Pool, Default, Include)."""

    __slots__ = ("path", "real_path", "text", "tokens", "statements", "rules", "_newlines")

    def __init__(self, path: str, real_path: str, text: str) -> None:
        self.path = path              # as shown to the user: relative to where they pointed us
        self.real_path = real_path    # os.path.realpath, the file to rewrite
        self.text = text
        self.tokens: List[Token] = []
        self.statements: list = []
        self.rules: Dict[str, Rule] = {}
        self._newlines: Optional[List[int]] = None

    def emit(self) -> str:
        """The text again, from the tokens alone."""
        return emit(self.text, self.tokens)

    def line_of(self, offset: int) -> int:
        """The 1-based line of *offset*."""
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, offset) + 1

    def __repr__(self) -> str:
        return "NinjaFile(%r)" % self.path


class Manifest:
    """A top file and everything it reaches through include and subninja."""

    __slots__ = ("top", "files", "rules", "builds", "pools", "defaults", "scope", "build_dir")

    def __init__(self, top: NinjaFile, build_dir: str, scope: Scope) -> None:
        self.top = top
        self.build_dir = build_dir
        self.scope = scope
        self.files: List[NinjaFile] = []      # one per file on disk, in the order first read
        self.rules: List[Rule] = []           # every `rule` statement, in reading order
        self.builds: List[Build] = []
        self.pools: Dict[str, Pool] = {}
        self.defaults: List[Default] = []

    def builds_of(self, rule: Rule) -> List[Build]:
        """The build statements that use *rule*."""
        return [b for b in self.builds if b.scope.lookup_rule(b.rule) is rule]

    def evaluate(self, build: Build, name: str) -> str:
        """Variable *name* as ninja expands it for *build* (`command`: what ninja runs).

        $in, $in_newline and $out are the explicit paths, canonicalized and quoted for
        /bin/sh as ninja does on POSIX. The lookup order is ninja's (BindingEnv::
        LookupWithFallback): the statement's bindings, the rule's, the file scopes; a
        statement without bindings has its file's scope as its own, whose variables then
        come before the rule's.
        """
        rule = build.scope.lookup_rule(build.rule)

        def lookup(var: str, seen: Tuple[str, ...]) -> str:
            if var in ("in", "in_newline"):
                return (" " if var == "in" else "\n").join(_shell_path(p) for p in build.inputs)
            if var == "out":
                return " ".join(_shell_path(p) for p in build.outputs)
            own = build.values if build.bindings else build.scope.variables
            if var in own:
                return own[var]
            binding = rule.bindings.get(var) if rule is not None else None
            if binding is not None:
                if var in seen:
                    raise ShimError("cycle in rule variables: %s" % " -> ".join(seen + (var,)),
                                    BAD_INPUT)
                return binding.value.evaluate(lambda v: lookup(v, seen + (var,)))
            parent = build.scope if build.bindings else build.scope.parent
            value = parent.lookup(var) if parent is not None else None
            return value if value is not None else ""

        return lookup(name, ())


class NinjaSyntaxError(ShimError):
    """A malformed manifest: `file:line: what`, exit status 65 (BAD_INPUT)."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__("%s:%d: %s" % (path, line, message), BAD_INPUT)
        self.path = path
        self.line = line


# --- reading and writing files ----------------------------------------------------------


def read_text(path: str) -> str:
    """The file's bytes as text, losslessly: UTF-8, undecodable bytes as surrogates."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """The bytes `read_text` read *text* from."""
    return text.encode("utf-8", "surrogateescape")


def emit(text: str, tokens: Iterable[Token]) -> str:
    """The text the tokens span, joined: the file itself when they are a file's tokens."""
    return "".join(text[t.start:t.end] for t in tokens)


def splice(text: str, edits: Iterable[Tuple[int, int, str]]) -> str:
    """*text* with each (start, end, replacement) applied; spans must not overlap."""
    out = []
    at = 0
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < at:
            raise ValueError("overlapping edits at offset %d" % start)
        out.append(text[at:start])
        out.append(replacement)
        at = end
    out.append(text[at:])
    return "".join(out)


def rewrite_commands(nfile: NinjaFile, commands: Dict[str, str]) -> str:
    """The text of *nfile* with the `command` value of each rule named in *commands* replaced
    by the raw (ninja-escaped) text given; every other byte is unchanged."""
    edits = []
    for name, raw in commands.items():
        rule = nfile.rules.get(name)
        if rule is None or "command" not in rule.bindings:
            raise KeyError("no rule %r in %s" % (name, nfile.path))
        value = rule.bindings["command"].value
        edits.append((value.start, value.end, raw))
    return splice(nfile.text, edits)


# --- parsing ------------------------------------------------------------------------------


def parse(path: str, text: Optional[str] = None) -> Manifest:
    """Parse the manifest *path* and every file it includes (relative to its directory).

    *text*, when given, is used as the top file's content instead of reading *path*.
    Raises ShimError: USAGE when the top file cannot be read, BAD_INPUT (NinjaSyntaxError)
    for a malformed file or an include that cannot be read.
    """
    if text is None:
        try:
            text = read_text(path)
        except OSError as e:
            raise ShimError("cannot read %s: %s" % (path, e.strerror or e), USAGE) from None
    build_dir = os.path.dirname(os.path.abspath(path))
    scope = Scope()
    scope.rules["phony"] = Rule("phony", {}, None, 0, scope)
    top = NinjaFile(path, os.path.realpath(path), text)
    manifest = Manifest(top, build_dir, scope)
    manifest.pools.update((name, Pool(name, depth, (), 0)) for name, depth in BUILTIN_POOLS)
    # Millions of small tuples, none of them in a cycle: the cyclic collector would walk
    # them over and over (a third of the time on a large manifest) for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _Parser(manifest, top, scope, (top.real_path,), os.path.dirname(path)).parse()
    finally:
        if collecting:
            gc.enable()
    return manifest


class _Parser:
    """One file, parsed as ninja's ManifestParser does, recording tokens as it goes."""

    def __init__(self, manifest: Manifest, nfile: NinjaFile, scope: Scope,
                 chain: Tuple[str, ...], shown_dir: str) -> None:
        self.manifest = manifest
        self.file = nfile
        self.scope = scope
        self.chain = chain            # real paths of the files including this one (cycles)
        self.shown_dir = shown_dir    # the build dir as the user named it, for paths in messages
        self.text = nfile.text
        self.tokens = nfile.tokens
        self.pos = 0
        self.last = 0                 # start of the last token read: errors point there
        self.unread_to: Tuple[int, int] = (0, 0)
        if not any(f.real_path == nfile.real_path for f in manifest.files):
            manifest.files.append(nfile)

    # --- lexer ---

    def error(self, message: str, at: Optional[int] = None) -> NinjaSyntaxError:
        return NinjaSyntaxError(self.file.path, self.file.line_of(self.last if at is None else at),
                                message)

    def describe(self, at: int) -> str:
        return "tabs are not allowed, use spaces" if self.text.startswith("\t", at) else "lexing error"

    def read_token(self) -> str:
        """Ninja's ReadToken: skip comment lines, return the next token's kind."""
        text, p, tokens = self.text, self.pos, self.tokens
        if text.startswith(("#", " "), p):
            m = _COMMENT_LINE.match(text, p)
            while m:
                for group, kind in ((1, "space"), (2, "comment"), (3, "newline")):
                    if m.end(group) > m.start(group):
                        tokens.append(_new(Token, (kind, m.start(group), m.end(group))))
                p = m.end()
                m = _COMMENT_LINE.match(text, p)
        self.unread_to = (len(tokens), p)
        self.last = p
        m = _TOKEN.match(text, p)
        if m is None:
            if p < len(text) and text[p] != "\x00":
                return "error"
            if p < len(text):    # a NUL ends the manifest for ninja: the rest is kept as it is
                tokens.append(_new(Token, ("eof", p, len(text))))
            self.pos = len(text)
            return "eof"
        group = m.lastindex
        end = m.end()
        self.pos = end
        if group == 1:
            tokens.append(_new(Token, ("newline", p, end)))
            return "newline"
        if group == 3:
            tokens.append(_new(Token, ("space", p, m.start(3))))
            tokens.append(_new(Token, ("newline", m.start(3), end)))
            return "newline"
        if group == 2 or group == 4:
            kind = "indent"
        elif group == 6:
            kind = m.group(5)
            if kind not in KEYWORDS:
                kind = "ident"
        else:
            kind = _PUNCTUATION[m.group(7)]
        spaces = m.start(group) if group != 2 else end
        tokens.append(_new(Token, (kind, p, spaces)))
        if spaces < end:
            tokens.append(_new(Token, ("space", spaces, end)))
        return kind

    def unread(self) -> None:
        del self.tokens[self.unread_to[0]:]
        self.pos = self.unread_to[1]

    def peek(self, kind: str) -> bool:
        if self.read_token() == kind:
            return True
        self.unread()
        return False

    def expect(self, kind: str) -> None:
        got = self.read_token()
        if got != kind:
            hint = " ($ also escapes ':')" if kind == "colon" else ""
            raise self.error("expected %s, got %s%s" % (_TOKEN_NAMES[kind], _TOKEN_NAMES[got], hint))

    def eat_whitespace(self) -> None:
        m = _WHITESPACE.match(self.text, self.pos)
        if m:
            self.tokens.append(_new(Token, ("space", self.pos, m.end())))
            self.pos = m.end()

    def read_ident(self) -> Optional[str]:
        self.last = self.pos
        m = _VARNAME.match(self.text, self.pos)
        if not m:
            return None
        self.tokens.append(_new(Token, ("ident", self.pos, m.end())))
        self.pos = m.end()
        if self.text.startswith(("$", " "), self.pos):
            self.eat_whitespace()
        return m.group()

    def read_eval(self, path: bool) -> EvalString:
        """Ninja's ReadEvalString: a path (ends before space, ':', '|' or newline) or a
        value (ends at the newline, which it consumes)."""
        text, n = self.text, len(self.text)
        start = p = self.pos
        pieces: list = []
        newline = None
        while True:
            m = _LITERAL.match(text, p)
            if m:
                pieces.append(_new(Piece, ("text", m.group(), p, m.end())))
                p = m.end()
            c = text[p] if p < n else "\x00"
            if c == "\n" or c == "\r" and text.startswith("\r\n", p):
                if not path:
                    newline = (p, p + (1 if c == "\n" else 2))
                break
            if c == " " or c == ":" or c == "|":
                if path:
                    break
                pieces.append(_new(Piece, ("text", c, p, p + 1)))
                p += 1
            elif c == "$":
                p = self.read_dollar(p, pieces)
            elif c == "\x00":
                raise self.error("unexpected EOF", p)
            else:
                raise self.error(self.describe(p), p)
        self.last = p
        if p > start:
            self.tokens.append(_new(Token, ("path" if path else "value", start, p)))
        value = EvalString(tuple(pieces), start, p)
        if newline:
            self.tokens.append(_new(Token, ("newline",) + newline))
            self.pos = newline[1]
        else:
            self.pos = p
            if text.startswith(("$", " "), p):
                m = _WHITESPACE.match(text, p)
                if m:
                    self.tokens.append(_new(Token, ("space", p, m.end())))
                    self.pos = m.end()
        return value

    def read_dollar(self, p: int, pieces: list) -> int:
        """Read the `$` escape or variable at *p* into *pieces*; return where it ends."""
        text = self.text
        following = text[p + 1:p + 2]
        if following in ("$", " ", ":"):
            pieces.append(_new(Piece, ("escape", following, p, p + 2)))
            return p + 2
        m = _CONTINUATION.match(text, p)
        if m:
            pieces.append(_new(Piece, ("continuation", "", p, m.end())))
            return m.end()
        m = _BRACED_VAR.match(text, p) or _SIMPLE_VARNAME.match(text, p + 1)
        if m and following:
            name = m.group(1) if following == "{" else m.group()
            pieces.append(_new(Piece, ("var", name, p, m.end())))
            return m.end()
        raise self.error("bad $-escape (literal $ must be written as $$)", p)

    # --- parser ---

    def parse(self) -> None:
        while True:
            kind = self.read_token()
            if kind == "eof":
                return
            if kind == "newline":
                continue
            if kind == "ident":
                self.unread()
                binding = self.parse_let()
                value = binding.value.evaluate(_or_empty(self.scope.lookup))
                self.scope.variables[binding.name] = value
                self.file.statements.append(binding)
            elif kind == "rule":
                self.parse_rule()
            elif kind == "build":
                self.parse_build()
            elif kind == "pool":
                self.parse_pool()
            elif kind == "default":
                self.parse_default()
            elif kind in ("include", "subninja"):
                self.parse_include(kind == "subninja")
            elif kind == "error":
                raise self.error(self.describe(self.last))
            else:
                raise self.error("unexpected %s" % _TOKEN_NAMES[kind])

    def parse_let(self) -> Binding:
        line = self.file.line_of(self.pos)
        name = self.read_ident()
        if name is None:
            raise self.error("expected variable name")
        self.expect("equals")
        return Binding(name, self.read_eval(path=False), line)

    def parse_rule(self) -> None:
        line = self.file.line_of(self.last)
        name = self.read_ident()
        if name is None:
            raise self.error("expected rule name")
        self.expect("newline")
        if name in self.scope.rules:
            raise self.error("duplicate rule '%s'" % name)
        bindings = {}
        while self.peek("indent"):
            binding = self.parse_let()
            if binding.name not in RULE_BINDINGS:
                raise self.error("unexpected variable '%s'" % binding.name)
            bindings[binding.name] = binding
        if _is_empty(bindings.get("rspfile")) != _is_empty(bindings.get("rspfile_content")):
            raise self.error("rspfile and rspfile_content need to be both specified")
        if _is_empty(bindings.get("command")):
            raise self.error("expected 'command =' line")
        rule = Rule(name, bindings, self.file, line, self.scope)
        self.scope.rules[name] = rule
        self.file.rules.setdefault(name, rule)
        self.file.statements.append(rule)
        self.manifest.rules.append(rule)

    def read_paths(self, into: List[EvalString]) -> None:
        while True:
            value = self.read_eval(path=True)
            if value.empty():
                return
            into.append(value)

    def parse_build(self) -> None:
        build = Build("", self.file.line_of(self.last), self.scope)
        outputs, implicit_outputs, inputs, implicit, order_only, validations = [], [], [], [], [], []
        self.read_paths(outputs)
        if self.peek("pipe"):
            self.read_paths(implicit_outputs)
        if not outputs and not implicit_outputs:
            raise self.error("expected path")
        self.expect("colon")
        build.rule = self.read_ident() or ""
        if not build.rule:
            raise self.error("expected build command name")
        if self.scope.lookup_rule(build.rule) is None:
            raise self.error("unknown build rule '%s'" % build.rule)
        self.read_paths(inputs)
        if self.peek("pipe"):
            self.read_paths(implicit)
        if self.peek("pipe2"):
            self.read_paths(order_only)
        if self.peek("pipeat"):
            self.read_paths(validations)
        self.expect("newline")
        while self.peek("indent"):
            binding = self.parse_let()
            build.bindings.append(binding)
            build.values[binding.name] = binding.value.evaluate(_or_empty(self.scope.lookup))
        lookup = _or_empty(build.lookup)
        for paths in (outputs, implicit_outputs, inputs, implicit, order_only, validations):
            paths[:] = [p.evaluate(lookup) for p in paths]
        (build.outputs, build.implicit_outputs, build.inputs, build.implicit, build.order_only,
         build.validations) = (outputs, implicit_outputs, inputs, implicit, order_only, validations)
        self.file.statements.append(build)
        self.manifest.builds.append(build)

    def parse_pool(self) -> None:
        line = self.file.line_of(self.last)
        name = self.read_ident()
        if name is None:
            raise self.error("expected pool name")
        self.expect("newline")
        if name in self.manifest.pools:
            raise self.error("duplicate pool '%s'" % name)
        depth = -1
        bindings = []
        while self.peek("indent"):
            binding = self.parse_let()
            if binding.name != "depth":
                raise self.error("unexpected variable '%s'" % binding.name)
            m = _ATOI.match(binding.value.evaluate(_or_empty(self.scope.lookup)))
            depth = int(m.group(1)) if m else 0       # atoi: no digits reads as 0
            if depth < 0:
                raise self.error("invalid pool depth")
            bindings.append(binding)
        if depth < 0:
            raise self.error("expected 'depth =' line")
        pool = Pool(name, depth, tuple(bindings), line)
        self.manifest.pools[name] = pool
        self.file.statements.append(pool)

    def parse_default(self) -> None:
        line = self.file.line_of(self.last)
        targets: List[EvalString] = []
        self.read_paths(targets)
        if not targets:
            raise self.error("expected target name")
        self.expect("newline")
        lookup = _or_empty(self.scope.lookup)
        default = Default(tuple(t.evaluate(lookup) for t in targets), line)
        self.manifest.defaults.append(default)
        self.file.statements.append(default)

    def parse_include(self, new_scope: bool) -> None:
        line = self.file.line_of(self.last)
        value = self.read_eval(path=True)
        if value.empty():
            raise self.error("expected path")
        relative = value.evaluate(_or_empty(self.scope.lookup))
        shown = os.path.join(self.shown_dir, relative)
        real = os.path.realpath(os.path.join(self.manifest.build_dir, relative))
        if real in self.chain:
            raise self.error("'%s' includes itself" % relative)
        if len(self.chain) >= MAX_INCLUDE_DEPTH:
            raise self.error("include and subninja nested deeper than %d" % MAX_INCLUDE_DEPTH)
        try:
            text = read_text(os.path.join(self.manifest.build_dir, relative))
        except OSError as e:
            raise self.error("loading '%s': %s" % (relative, e.strerror or e)) from None
        target = NinjaFile(shown, real, text)
        scope = Scope(self.scope) if new_scope else self.scope
        _Parser(self.manifest, target, scope, self.chain + (real,), self.shown_dir).parse()
        self.expect("newline")
        self.file.statements.append(Include(relative, new_scope, line, target))


def _or_empty(lookup: Callable[[str], Optional[str]]) -> Callable[[str], str]:
    """*lookup* as ninja's evaluation sees it: an undefined variable is empty."""
    return lambda name: lookup(name) or ""


def _is_empty(binding: Optional[Binding]) -> bool:
    return binding is None or binding.value.empty()


def canonical_path(path: str) -> str:
    """A path as ninja's CanonicalizePath makes it: no `.` or empty components, `x/..`
    removed (leading `..` kept)."""
    parts: List[str] = []
    for component in path.split("/"):
        if component in ("", "."):
            continue
        if component == ".." and parts and parts[-1] != "..":
            parts.pop()
            continue
        parts.append(component)
    joined = "/".join(parts)
    return "/" + joined if path.startswith("/") else joined or "."


_SHELL_SAFE = re.compile(r"[A-Za-z0-9_+\-./]*\Z")


def _shell_path(path: str) -> str:
    """*path* canonicalized and quoted as ninja quotes $in and $out for /bin/sh."""
    path = canonical_path(path)
    if _SHELL_SAFE.match(path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"
