"""Finding the toolchain.toml layers and loading them through a per-user cache.

Discovery, all found layers merged, later ones winning: the built-in preset from
toolchains/ -> the user's `$XDG_CONFIG_HOME/shim/toolchain.toml` -> the nearest
`toolchain.toml` walking up from the cwd (ninja runs commands in the build dir) ->
`SHIM_TOOLCHAIN`. Parsing TOML costs ~20 ms of imports per step, so the merged result
is cached with marshal (sealed by a checksum, shim/digest.py), keyed by the files'
paths, mtime_ns, size and inode (and PATH, which picks the default preset); only a miss
imports shim/config/layers.py. A read-only cache directory just means parsing every time;
a cache file that is not ours (another user's, or a symlink), not whole or not in the shape
we write is a miss.
"""

from shim import __version__, digest, host, rundir
from shim.exit_status import CONFIG, ShimError

FILENAME = "toolchain.toml"
_FORMAT = 5   # bump when the cached structure changes (5: sealed, shim/digest.py)


def user_config_path(env: dict):
    base = env.get("XDG_CONFIG_HOME") or (env.get("HOME", "") and host.join(env["HOME"], ".config"))
    return host.join(host.join(base, "shim"), FILENAME) if base else None


def cache_dir(env: dict):
    if env.get("SHIM_CACHE_DIR"):
        return env["SHIM_CACHE_DIR"]
    base = env.get("XDG_CACHE_HOME") or (env.get("HOME", "") and host.join(env["HOME"], ".cache"))
    return host.join(base, "shim") if base else None


def _distrust(path: str, st, link=None):
    """Why a toolchain.toml found by walking up must be skipped, or None to use it.

    It names programs to run, so it must be ours or root's, in a folder that is ours or
    root's (and when it is a symlink, the *link* too: another user's link to /etc/passwd
    would make root's file the config of every build below it): another user's file is skipped (another user can plant /tmp/toolchain.toml
    above every build under /tmp; it must not stop them, nor be run). A file of ours
    that others may write is refused outright: it is ours to fix (as ccache 4.13)."""
    uid = host.getuid()
    folder = host.dirname(path)
    fst = host.stat(folder)
    for what, s in ((path, link or st), (path, st), (folder, fst)):
        if s.st_uid not in (uid, 0):
            return "%s is owned by %s, not by you or root" % (what, _user(s.st_uid))
    if st.st_mode & 0o022:
        raise ShimError("refusing %s: group or others can write it (chmod go-w %s)" % (path, path), CONFIG)
    if fst.st_mode & 0o022 and not fst.st_mode & 0o1000:
        raise ShimError("refusing %s: group or others can write its folder and replace it (chmod go-w %s)"
                        % (path, folder), CONFIG)
    return None


def _user(uid: int) -> str:
    try:
        import pwd        # only on this rare path: a file of another user's
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except (ImportError, KeyError):
        return "uid %d" % uid


def discover(cwd: str, env: dict):
    """[(role, path, stat)] of the layers above the preset, lowest precedence first."""
    found = []
    user = user_config_path(env)
    if user:
        try:
            found.append(("user", user, host.stat(user)))
        except OSError:
            pass
    d = cwd
    while True:
        path = host.join(d, FILENAME)
        try:
            link = host.lstat(path)
            st = host.stat(path) if link.st_mode & 0o170000 == 0o120000 else link
        except OSError:
            st = None
        if st is not None:
            if path == user:
                break
            why = _distrust(path, st, link)
            if why is None:
                found.append(("project", path, st))
                break
            rundir.warn_once("toolchain", "ignoring %s: %s; looking further up" % (path, why), env)
        parent = host.dirname(d)
        if parent == d or not parent:
            break
        d = parent
    explicit = env.get("SHIM_TOOLCHAIN")
    if explicit:
        if not host.is_absolute(explicit):
            explicit = host.join(cwd, explicit)
        try:
            found.append(("env", explicit, host.stat(explicit)))
        except OSError as e:
            raise ShimError("SHIM_TOOLCHAIN=%s: %s" % (explicit, e.strerror or e), CONFIG) from None
    return found


def _signature(st) -> tuple:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def load(cwd: str, env: dict) -> dict:
    """The merged runtime config for a step run in *cwd* (see shim/config/layers.py compile_config)."""
    found = discover(cwd, env)
    env_path = env.get("PATH", "")
    ident = "\0".join([__version__, str(_FORMAT), host.PLATFORM, env_path] + [p for _, p, _ in found])
    directory = cache_dir(env)
    cache = host.join(directory, "toolchain-%s.marshal" % digest.fingerprint(ident)) if directory else None
    if cache:
        config = _read_cache(cache, ident, {p: st for _, p, st in found})
        if config is not None:
            return config
    from shim.config import layers    # cache miss: the only import of tomllib
    config, deps = layers.build([(role, path) for role, path, _ in found], env_path)
    if cache:
        _write_cache(cache, ident, deps, {p: st for _, p, st in found}, config)
    return config


def _read_cache(cache: str, ident: str, known: dict):
    """The cached config, or None when there is none, it is stale, or it is not a cache
    file of ours with the shape _write_cache gives it (damaged state is a miss, never
    an error: the miss rewrites it)."""
    try:
        stored_ident, deps, config = digest.unpack(host.read_own_file(cache))
        if stored_ident != ident or type(config) is not dict or not _SHAPE.issubset(config):
            return None
        for path, signature in deps:
            st = known.get(path)
            if _signature(st if st is not None else host.stat(path)) != tuple(signature):
                return None
    except (OSError, ValueError, EOFError, TypeError, MemoryError):
        return None
    return config


# Top-level keys of a compiled config (shim/config/layers.py compile_config); a cache without
# them is not ours to trust.
_SHAPE = frozenset(("launchers", "ledger", "memory", "preset", "mode", "steps", "tools", "names",
                    "name_patterns"))


def _write_cache(cache: str, ident: str, deps, known: dict, config: dict) -> None:
    try:
        signatures = []
        for path in deps:
            st = host.stat(path)
            if path in known and _signature(known[path]) != _signature(st):
                return          # edited while we read it: do not cache a mix
            signatures.append((path, _signature(st)))
        host.makedirs(host.dirname(cache), 0o700)
        host.replace_file(cache, digest.pack((ident, signatures, config)), 0o600)
    except (OSError, ValueError):
        pass    # a read-only or full cache directory only costs speed
