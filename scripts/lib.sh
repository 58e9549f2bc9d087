# Shared by scripts/run.sh and scripts/test.sh: install what is missing from
# Debian's packages (apt-get update once, then install), as root or via sudo.

_apt_updated=0

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $* (install it by hand, or run as root)" >&2; return 1
  fi
}

# ensure_command COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
ensure_command() {
  local command=$1 package=$2
  command -v "$command" >/dev/null 2>&1 && return 0
  echo "==> installing $package (for $command)" >&2
  if [ "$_apt_updated" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2
}

ensure_build_tools() {
  command -v cargo >/dev/null || {
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) first" >&2
    return 1
  }
  ensure_command protoc protobuf-compiler
}
