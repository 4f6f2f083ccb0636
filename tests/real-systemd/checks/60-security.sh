# shellcheck shell=bash
# systemd-analyze security, as the running manager rates the installed units.

check "dpkg -i the package" install_package

# exposure UNIT MAX: the "Overall exposure level" is at most MAX.
exposure() {
    local out level
    out=$(in_container systemd-analyze security --no-pager "$1" 2>&1)
    level=$(sed -nE 's/.*Overall exposure level for [^:]*: ([0-9.]+).*/\1/p' <<<"$out")
    echo "$1: exposure ${level:-?} (at most $2)"
    [ -n "$level" ] || { echo "$out"; return 1; }
    awk -v l="$level" -v m="$2" 'BEGIN { exit !(l <= m) }'
}
check "systemd-analyze security upcased.service <= 1.1" exposure upcased.service 1.1
check "systemd-analyze security upcased@0.service <= 1.1" exposure upcased@0.service 1.1
check "systemd-analyze security upcased-activated.service <= 0.2" exposure upcased-activated.service 0.2
