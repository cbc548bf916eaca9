# apt_install PACKAGE...: installs Debian packages, as root or with sudo
# -n, for the scripts that need a tool the machine lacks.
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "$(basename "$0"): needs $* and has no apt-get to install it with" >&2
    exit 1
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo -n); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
