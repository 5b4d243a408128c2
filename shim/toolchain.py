"""Finding the toolchain.toml layers and loading them through a per-user cache.

Discovery, all found layers merged, later ones winning: the built-in preset from
toolchains/ -> the user's `$XDG_CONFIG_HOME/shim/toolchain.toml` -> the nearest
`toolchain.toml` walking up from the cwd (ninja runs commands in the build dir) ->
`SHIM_TOOLCHAIN`. Parsing TOML costs ~20 ms of imports per step, so the merged result
is cached with marshal, keyed by the files' paths, mtime_ns, size and inode (and
PATH, which picks the default preset); only a miss imports shim/config.py. A
read-only cache directory just means parsing every time.
"""

import marshal

from shim import __version__, digest, host
from shim.exit_status import CONFIG, ShimError

FILENAME = "toolchain.toml"
_FORMAT = 2   # bump when the cached structure changes


def preset_dir():
    """toolchains/ as installed (shim/toolchains) or in a source checkout (../toolchains)."""
    here = host.dirname(__file__)
    if not host.is_absolute(here):
        here = host.join(host.getcwd(), here)
    for d in (host.join(here, "toolchains"), host.join(host.dirname(here), "toolchains")):
        try:
            host.stat(host.join(d, "gcc.toml"))
            return d
        except OSError:
            pass
    return None


def user_config_path(env: dict):
    base = env.get("XDG_CONFIG_HOME") or (env.get("HOME", "") and host.join(env["HOME"], ".config"))
    return host.join(host.join(base, "shim"), FILENAME) if base else None


def cache_dir(env: dict):
    if env.get("SHIM_CACHE_DIR"):
        return env["SHIM_CACHE_DIR"]
    base = env.get("XDG_CACHE_HOME") or (env.get("HOME", "") and host.join(env["HOME"], ".cache"))
    return host.join(base, "shim") if base else None


def _check_trusted(path: str, st) -> None:
    """A toolchain.toml found by walking up names programs to run: it (and its folder)
    must belong to us or root and not be writable by others (as ccache 4.13)."""
    uid = host.getuid()
    folder = host.dirname(path)
    for what, s in ((path, st), (folder, host.stat(folder))):
        if s.st_uid not in (uid, 0):
            raise ShimError("refusing %s: %s is owned by uid %d, not by you or root "
                            "(set SHIM_TOOLCHAIN to use it anyway)" % (path, what, s.st_uid), CONFIG)
        if s.st_mode & 0o022:
            raise ShimError("refusing %s: %s is writable by group or others (chmod go-w %s)"
                            % (path, what, what), CONFIG)


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
            st = host.stat(path)
        except OSError:
            st = None
        if st is not None:
            if path != user:
                _check_trusted(path, st)
                found.append(("project", path, st))
            break
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
    """The merged runtime config for a step run in *cwd* (see shim/config.py compile_config)."""
    found = discover(cwd, env)
    env_path = env.get("PATH", "")
    ident = "\0".join([__version__, str(_FORMAT), host.PLATFORM, env_path] + [p for _, p, _ in found])
    directory = cache_dir(env)
    cache = host.join(directory, "toolchain-%s.marshal" % digest.fingerprint(ident)) if directory else None
    if cache:
        config = _read_cache(cache, ident, {p: st for _, p, st in found})
        if config is not None:
            return config
    from shim import config as config_mod    # cache miss: the only import of tomllib
    config, deps = config_mod.build([(role, path) for role, path, _ in found], env_path)
    if cache:
        _write_cache(cache, ident, deps, {p: st for _, p, st in found}, config)
    return config


def _read_cache(cache: str, ident: str, known: dict):
    try:
        stored_ident, deps, config = marshal.loads(host.read_file(cache))
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if stored_ident != ident:
        return None
    for path, signature in deps:
        st = known.get(path)
        try:
            if _signature(st if st is not None else host.stat(path)) != tuple(signature):
                return None
        except OSError:
            return None
    return config


def _write_cache(cache: str, ident: str, deps, known: dict, config: dict) -> None:
    import os
    try:
        signatures = []
        for path in deps:
            st = os.stat(path)
            if path in known and _signature(known[path]) != _signature(st):
                return          # edited while we read it: do not cache a mix
            signatures.append((path, _signature(st)))
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        tmp = "%s.%s.tmp" % (cache, os.urandom(6).hex())   # not the pid: Bazel actions are all pid 2
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((ident, signatures, config)))
        os.replace(tmp, cache)
    except (OSError, ValueError):
        pass    # a read-only or full cache directory only costs speed
