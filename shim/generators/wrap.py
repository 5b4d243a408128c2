"""`shim wrap`: route the compile, link and archive rules of a generated build.ninja through shim.

Generators (CMake, Meson, GN, ninja's configure.py) write `command = /usr/bin/c++ ...`;
wrap inserts the word `shim ` in front of the program (launcher form, `shim /usr/bin/c++ ...`,
which shim/step.py runs) and changes no other byte of any file (shim/generators/ninjafile.py).
The command that prints and writes is shim/cli/wrap.py.

Which programs: a rule's command is read as /bin/sh will read it once ninja has expanded
it. It is cut into simple commands at `&&`, `||`, `;`, `|`, `&` and newlines outside quotes
(its *parts*: `rm -f $out && ar crs $out $in` has two); a part's program is its first word
after `NAME=value` assignments. A program is recognised when shim.args.family_of gives it a
family (gcc, ar, ld, msvc, msvc-link, msvc-lib: cc, c++, gcc, g++, clang*, *-gcc, ar,
llvm-ar, ld*, lld, mold, cl, link...) or it matches a --program pattern; every recognised
program of a rule gets its own `shim `. ranlib is not recognised: it only indexes an
archive ar has written (CMake runs `ar qc` then `ranlib`), shim has no family for it and
nothing to measure or rewrite there; `--program ranlib` wraps it too.

Variables: `$cxx` is looked up as the rule sees it (its own bindings, then the file scopes
as they stand at the end), and `shim ` goes before `$cxx` when its value starts the program.
A variable nothing in scope defines is left to build statements (CMake's `$PRE_LINK`,
`$COMMAND`, `${LAUNCHER}`): alone as the program it is not recognised (--rule wraps it
anyway); glued in front of a program it is taken as a prefix and stays in front of `shim`,
so a launcher or a clang-tidy co-compile set that way ends up running shim, which runs the
compiler. Launcher chains a generator writes (Meson finds ccache on PATH by itself: `ccache c++ ...`;
CMake's `CMAKE_<LANG>_COMPILER_LAUNCHER=ccache`: `ccache /usr/bin/cc ...`): a part whose
program is one of shim.args.LAUNCHERS (ccache, sccache, distcc, icecc), followed by more
of them and then a recognised program, gets `shim ` before the first launcher
(`shim ccache c++ ...`), which shim/step.py runs as c++'s step through that chain. `env
NAME=value ...` in front of a program is read like `NAME=value ...`: shim goes after the
assignments (`env A=1 shim ccache cc`). Any other program in front of a compiler (CMake's
`cmake -E __run_co_compile ... --`, `nice`, `time`) is not recognised: the rule is left
alone, and reported as *outside*. A build statement that sets `command` itself is not
looked at.

Outside: a part that runs no shim, is not wrapped, and has a recognised program as its
program or as any later word not starting with `-` (a compiler behind an unknown
wrapper), or whose recognised program sits inside a variable's value. `shim wrap` names
such rules, and `--check` fails while there are any. Rules where the user wrote `shim`
are theirs and never outside.

Never wrapped: parts whose program is already shim (so wrapping twice changes nothing),
rules where the user wrote `shim` themselves (a part runs shim that no marker line
records), shell builtins (`:`, `cd`, `true`...), ninja's built-in `phony` and generator
rules (`generator = 1`: CMake's RERUN_CMAKE, configure.py's `configure`).

Undo: the one thing wrap adds besides the `shim ` words is a comment as the file's first
line, `# shim-wrap: RULE@PART ...`, naming each part it wrapped in that file. `--undo`
removes the `shim ` word of exactly those parts and the comment line, so wrap then undo
gives back the original bytes even when the file already had `shim cc` of its own, which
neither wrap nor undo touches.
"""

import os
import re
import stat
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from shim import args, exit_status, host, pattern
from shim.exit_status import ShimError
from shim.generators import ninjafile
from shim.generators.ninjafile import Manifest, NinjaFile, Rule

MARKER = "# shim-wrap:"
WORD = "shim "
# Shell builtins and no-ops that start a part without running a program worth wrapping.
SHELL_BUILTINS = frozenset((":", "true", "false", "cd", "exit", "export", "set", "unset", "test",
                            "[", "echo", "printf", "exec", "eval", ".", "source", "umask", "ulimit"))
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_ENTRY = re.compile(r"([a-zA-Z0-9_.-]+)@([0-9]+)\Z")


class Part(NamedTuple):
    """One simple command of a rule's command (see the module docstring).

    program: its program word without shell quotes ("" when it has none, or only a variable
    nothing in scope defines: then *unresolved* is True). start: the file offset of the
    word's first character (after a glued prefix of such variables), None when that
    character comes from inside a variable's value. offset: where `shim ` can be inserted,
    None when nowhere. rest: the words after the program, without quotes.
    """
    index: int
    program: str
    unresolved: bool
    start: Optional[int]
    offset: Optional[int]
    rest: Tuple[str, ...]

    @property
    def following(self) -> str:
        """The word after the program (the real program when program is shim)."""
        return self.rest[0] if self.rest else ""


class RulePlan(NamedTuple):
    """What wrap does to one rule: parts to wrap, parts already wrapped, parts that stay
    outside shim after wrapping (see the module docstring), among them those whose
    recognised program sits inside a variable's value (nowhere to put `shim `)."""
    rule: Rule
    wrap: Tuple[Part, ...]
    wrapped: Tuple[Part, ...]
    outside: Tuple[Part, ...] = ()


class _Element(NamedTuple):
    char: Optional[str]      # None: a variable with no text here (unknown, or empty)
    origin: Optional[int]    # file offset this character was written at, if it has one
    unknown: bool            # a variable nothing in scope defines


# --- reading commands ---------------------------------------------------------------------


def command_parts(rule: Rule) -> List[Part]:
    """The parts of *rule*'s command, with their programs and where `shim ` would go."""
    binding = rule.bindings.get("command")
    if binding is None:
        return []
    text = rule.file.text
    # Inserting right after `$name` would extend the variable's name: not a place for `shim `.
    after_simple_var = {p.end for p in binding.value.pieces
                        if p.kind == "var" and text[p.end - 1] != "}"}
    parts = []
    for index, words in enumerate(_split(_elements(rule))):
        parts.append(_part(index, words, after_simple_var))
    return parts


def _elements(rule: Rule) -> List[_Element]:
    out = []
    for seg in rule.segments("command"):
        if seg.kind == "text":
            out.extend(_Element(c, seg.start + i, False) for i, c in enumerate(seg.text))
        elif seg.kind == "escape":
            out.append(_Element(seg.text, seg.start, False))
        elif seg.kind == "unknown":
            out.append(_Element(None, seg.start, True))
        elif seg.text:
            out.append(_Element(seg.text[0], seg.start, False))
            out.extend(_Element(c, None, False) for c in seg.text[1:])
        else:
            out.append(_Element(None, seg.start, False))
    return out


def _split(elements: List[_Element]) -> List[List[List[_Element]]]:
    """Parts, each a list of words, each a list of elements: /bin/sh's word and command
    boundaries, without expansions (ninja has done those; the shell's own are rare here)."""
    parts: List[List[List[_Element]]] = [[]]
    word: List[_Element] = []
    quote = None
    i, n = 0, len(elements)

    def end_word():
        if word:
            parts[-1].append(list(word))
            word.clear()

    while i < n:
        element = elements[i]
        ch = element.char
        i += 1
        if ch is None:
            word.append(element)
        elif quote:
            word.append(element)
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"' and i < n:
                word.append(elements[i])
                i += 1
        elif ch == "\\":
            word.append(element)
            if i < n:
                word.append(elements[i])
                i += 1
        elif ch in "'\"":
            quote = ch
            word.append(element)
        elif ch in " \t":
            end_word()
        elif ch in ";|&\n" and not (ch == "&" and word and word[-1].char in ("<", ">")):   # 2>&1
            end_word()
            parts.append([])
            if ch in "|&" and i < n and elements[i].char == ch:
                i += 1
        else:
            word.append(element)
    end_word()
    return parts


def _part(index: int, words: List[List[_Element]], after_simple_var: set) -> Part:
    # Words for the shell: variables that are empty make none.
    words = [w for w in words if any(e.char is not None or e.unknown for e in w)]
    texts = [_unquote([e for e in w if e.char is not None]) for w in words]
    for w, word in enumerate(words):
        chars = [e for e in word if e.char is not None]
        text = texts[w]
        if _ASSIGNMENT.match(text):
            continue                      # FOO=bar prog ...: the program comes after
        if host.program_stem(text) == "env" and w + 1 < len(texts) and _ASSIGNMENT.match(texts[w + 1]):
            continue                      # env FOO=bar prog ...: the same
        start = chars[0].origin if chars else word[0].origin
        offset = start
        if offset is not None and offset in after_simple_var:
            offset = word[0].origin       # before the glued `$prefix` instead
            if offset in after_simple_var:
                offset = None
        return Part(index, text, not chars, start, offset, tuple(t for t in texts[w + 1:] if t))
    return Part(index, "", False, None, None, ())


def _unquote(chars: List[_Element]) -> str:
    out = []
    quote = None
    i = 0
    while i < len(chars):
        ch = chars[i].char
        i += 1
        if quote and ch == quote:
            quote = None
        elif not quote and ch in "'\"":
            quote = ch
        elif ch == "\\" and quote != "'" and i < len(chars):
            out.append(chars[i].char)
            i += 1
        else:
            out.append(ch)
    return "".join(out)


# --- deciding -------------------------------------------------------------------------------


def is_shim(program: str) -> bool:
    """True for `shim` or a path ending in /shim."""
    return host.program_stem(program) == "shim"


def recognised(program: str, patterns: Sequence[str] = ()) -> bool:
    """True if wrap puts shim in front of *program*: a family shim.args knows, or a
    --program pattern (wildcards; matched against the basename, or the whole word when
    the pattern has a `/`)."""
    if not program or program in SHELL_BUILTINS or is_shim(program):
        return False
    if args.family_of(program) != "other":
        return True
    stem = host.program_stem(program)
    return any(pattern.match(program if "/" in pat else stem, pat) for pat in patterns)


def launched(part: Part, patterns: Sequence[str] = ()) -> str:
    """The recognised program a launcher chain runs when *part* is one (`ccache c++ ...`:
    c++), else ""."""
    if host.program_stem(part.program) not in args.LAUNCHERS:
        return ""
    for word in part.rest:
        if host.program_stem(word) not in args.LAUNCHERS:
            return word if recognised(word, patterns) else ""
    return ""


def _runs_a_tool(part: Part, patterns: Sequence[str]) -> str:
    """The recognised program *part* runs, as its program or behind another, or ""."""
    if part.program in SHELL_BUILTINS or is_shim(part.program):
        return ""
    return next((w for w in (part.program,) + part.rest
                 if not w.startswith("-") and recognised(w, patterns)), "")


def plan_rule(rule: Rule, patterns: Sequence[str] = (), forced: bool = False,
              recorded: frozenset = frozenset()) -> RulePlan:
    """What wrap does to *rule* (nothing for phony and generator rules).

    *recorded*: the indexes of the parts the file's marker line says wrap wrapped. A part
    that runs shim without being recorded was written so by the user: then the rule is
    theirs, and wrap adds nothing to it. *forced* (--rule): if no part has a recognised or
    already wrapped program, the first part with a program word that is not a shell builtin
    is wrapped, whatever it runs.
    """
    if rule.file is None or "generator" in rule.bindings:
        return RulePlan(rule, (), ())
    parts = command_parts(rule)
    wrapped = tuple(p for p in parts if is_shim(p.program))
    if any(p.index not in recorded for p in wrapped):
        return RulePlan(rule, (), wrapped)
    chosen = [p for p in parts if not p.unresolved
              and (recognised(p.program, patterns) or launched(p, patterns))]
    if forced and not chosen and not wrapped:
        chosen = [p for p in parts if (p.program or p.unresolved)
                  and p.program not in SHELL_BUILTINS][:1]
    wrap = tuple(p for p in chosen if p.offset is not None)
    outside = tuple(p for p in parts if p not in wrap and _runs_a_tool(p, patterns))
    return RulePlan(rule, wrap, wrapped, outside)


def outside_reason(part: Part, patterns: Sequence[str] = ()) -> Tuple[str, str]:
    """(the program *part* runs outside shim, why wrap left it there)."""
    tool = _runs_a_tool(part, patterns)
    if part.offset is None:
        return tool, "its program comes from inside a variable's value"
    return tool, "behind %s, which shim wrap does not know" % (host.program_stem(part.program) or "a variable")


def _shown(part: Part) -> str:
    """How a wrapped part's program is named: `c++`, `ccache c++` (launcher, compiler), `a variable`."""
    stem = host.program_stem(part.program)
    runs = next((w for w in part.rest if host.program_stem(w) not in args.LAUNCHERS), "")
    if stem in args.LAUNCHERS and runs:
        return "%s %s" % (stem, host.program_stem(runs))
    return stem or "a variable"


def plan(manifest: Manifest, patterns: Sequence[str] = (), rules: Sequence[str] = ()) -> List[RulePlan]:
    """The plan of every rule of *manifest* that wrap has something to say about, in reading
    order; a file read twice (subninja) counts once. Raises ShimError (USAGE) for a --rule
    that names no rule, phony or a generator rule."""
    names = {r.name for r in manifest.rules}
    for name in rules:
        if name == "phony":
            raise ShimError("--rule phony: phony is ninja's built-in rule, it runs nothing",
                            exit_status.USAGE)
        if name not in names:
            raise ShimError("--rule %s: no rule of that name in %s or the files it includes"
                            % (name, manifest.top.path), exit_status.USAGE)
    recorded = {}
    for nfile in manifest.files:
        for name, index in marker_of(nfile)[1]:
            recorded.setdefault((nfile.real_path, name), set()).add(index)
    out = []
    seen = set()
    for rule in manifest.rules:
        key = (rule.file.real_path, rule.name)
        if key in seen:
            continue
        seen.add(key)
        if rule.name in rules and "generator" in rule.bindings:
            raise ShimError("--rule %s: a generator rule (it regenerates %s): shim wrap leaves it alone"
                            % (rule.name, manifest.top.path), exit_status.USAGE)
        result = plan_rule(rule, patterns, rule.name in rules, frozenset(recorded.get(key, ())))
        if result.wrap or result.wrapped or result.outside:
            out.append(result)
    return out


# --- the marker line ------------------------------------------------------------------------


def marker_of(nfile: NinjaFile) -> Tuple[str, List[Tuple[str, int]]]:
    """(the marker line with its line ending, its entries) of *nfile*, or ("", [])."""
    if not nfile.text.startswith(MARKER):
        return "", []
    end = nfile.text.find("\n")
    line = nfile.text if end < 0 else nfile.text[:end + 1]
    entries = []
    for word in line[len(MARKER):].split():
        m = _ENTRY.match(word)
        if not m:
            raise ShimError("%s:1: malformed %r line: %r is not RULE@PART (remove the line by hand)"
                            % (nfile.path, MARKER, word), exit_status.BAD_INPUT)
        entries.append((m.group(1), int(m.group(2))))
    return line, entries


def marker_line(entries: List[Tuple[str, int]], newline: str) -> str:
    """The marker line naming *entries* (each once, in order)."""
    unique = list(dict.fromkeys(entries))
    return "%s %s%s" % (MARKER, " ".join("%s@%d" % e for e in unique), newline)


def _newline_of(text: str) -> str:
    end = text.find("\n")
    return "\r\n" if end > 0 and text[end - 1] == "\r" else "\n"


# --- changing files -------------------------------------------------------------------------


class FileChange(NamedTuple):
    """The new text of one file and the rules whose commands changed, with their programs."""
    file: NinjaFile
    text: str
    rules: Tuple[Tuple[str, Tuple[str, ...]], ...]


def wrap_changes(manifest: Manifest, plans: List[RulePlan]) -> List[FileChange]:
    """The files wrapping changes: `shim ` inserted, the marker line written or extended."""
    by_file: Dict[str, List[RulePlan]] = {}
    for p in plans:
        if p.wrap:
            by_file.setdefault(p.rule.file.real_path, []).append(p)
    changes = []
    for nfile in manifest.files:
        file_plans = by_file.get(nfile.real_path)
        if not file_plans:
            continue
        commands = {}
        for p in file_plans:
            value = p.rule.bindings["command"].value
            commands[p.rule.name] = _edit(nfile.text, value.start, value.end,
                                          [(part.offset, part.offset, WORD) for part in p.wrap])
        old_line, entries = marker_of(nfile)
        entries = entries + [(p.rule.name, part.index) for p in file_plans for part in p.wrap]
        text = ninjafile.rewrite_commands(nfile, commands)
        text = marker_line(entries, _newline_of(nfile.text)) + text[len(old_line):]
        changes.append(FileChange(nfile, text, tuple(
            (p.rule.name, tuple(_shown(part) for part in p.wrap))
            for p in file_plans)))
    return changes


def undo_changes(manifest: Manifest) -> Tuple[List[FileChange], List[str]]:
    """The files undoing changes (the `shim ` words the marker names and the marker line
    removed), and a warning for each marker entry that no longer matches the file."""
    changes, warnings = [], []
    for nfile in manifest.files:
        line, entries = marker_of(nfile)
        if not line:
            continue
        removals: Dict[str, List[Part]] = {}
        for name, index in dict.fromkeys(entries):
            rule = nfile.rules.get(name)
            parts = command_parts(rule) if rule is not None else []
            part = parts[index] if index < len(parts) else None
            if part is None or not _starts_with_our_word(nfile, part):
                warnings.append("%s: rule %s, part %d: no 'shim ' there any more (edited since "
                                "shim wrap?): left as it is" % (nfile.path, name, index))
                continue
            removals.setdefault(name, []).append(part)
        commands = {}
        for name, parts in removals.items():
            value = nfile.rules[name].bindings["command"].value
            commands[name] = _edit(nfile.text, value.start, value.end,
                                   [(p.start, p.start + len(WORD), "") for p in parts])
        text = ninjafile.rewrite_commands(nfile, commands)[len(line):]
        changes.append(FileChange(nfile, text, tuple(
            (name, tuple(_shown(p._replace(program=p.following, rest=p.rest[1:])) for p in parts))
            for name, parts in removals.items())))
    return changes, warnings


def _starts_with_our_word(nfile: NinjaFile, part: Part) -> bool:
    """True if *part* runs shim through the literal `shim ` wrap inserts (not a variable)."""
    return is_shim(part.program) and part.start is not None and nfile.text.startswith(WORD, part.start)


def _edit(text: str, start: int, end: int, edits: List[Tuple[int, int, str]]) -> str:
    """text[start:end] with *edits* (file offsets) applied."""
    return ninjafile.splice(text[start:end], [(a - start, b - start, s) for a, b, s in edits])


def write_atomically(path: str, text: str, mode_from: str) -> None:
    """Replace *path* with *text* by one rename (host.replace_file), so that ninja reads the
    old file or the new one, never a mix; the mode bits are those of *mode_from*. OSError
    if it cannot be written (nothing is left behind)."""
    host.replace_file(path, ninjafile.encode(text), stat.S_IMODE(os.stat(mode_from).st_mode))
    os.chmod(path, stat.S_IMODE(os.stat(mode_from).st_mode))     # as it was, whatever the umask
