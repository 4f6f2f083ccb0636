# shellcheck shell=bash
# The package the Debian way: install enables and starts upcased.service
# (the socket stays opt-in), an upgrade restarts it with the new binary,
# remove stops it, purge removes the config.

svc=upcased.service
sock=upcased.socket

check "dpkg -i $(basename "$DEB") ($DEB_VERSION)" install_package "$DEB"

# unit_state UNIT ENABLED ACTIVE: is-enabled and is-active say these.
unit_state() {
    local enabled active
    enabled=$(in_container systemctl is-enabled "$1")
    active=$(in_container systemctl is-active "$1")
    echo "$1: $enabled, $active"
    [ "$enabled" = "$2" ] && [ "$active" = "$3" ]
}
check "install enabled and started $svc" unit_state "$svc" enabled active
check "install left $sock disabled and stopped (opt-in)" unit_state "$sock" disabled inactive
no_reload_needed() {
    local u need ok=0
    for u in "$svc" "$sock" upcased-activated.service upcased@0.service; do
        need=$(unit_prop "$u" NeedDaemonReload)
        echo "$u: NeedDaemonReload=$need"
        [ "$need" = no ] || ok=1
    done
    return $ok
}
check "install: no unit file changed on disk since the last daemon-reload" no_reload_needed
check "installed: TCP answers" expect_reply tcp 12000 $'installed\n' $'INSTALLED\n'

# --- upgrade -------------------------------------------------------------------
pid=$(unit_prop "$svc" MainPID)
check "dpkg -i $(basename "$DEB_NEXT") ($DEB_NEXT_VERSION): the upgrade" install_package "$DEB_NEXT"
# dpkg replaced /usr/bin/upcased (a new inode); the process must run the
# file now installed, not the deleted old one.
new_binary() {
    local line ok=0
    line=$(runs_installed_binary "$svc") || ok=1
    echo "MainPID $pid -> $line"
    [ "$ok" = 0 ] && [ "${line%%:*}" != "$pid" ] &&
        [ "$(in_container systemctl is-active "$svc")" = active ]
}
check "the upgrade restarted $svc with the new binary" new_binary
check "upgrade: no unit file changed on disk since the last daemon-reload" no_reload_needed
check "upgraded: TCP answers" expect_reply tcp 12000 $'upgraded\n' $'UPGRADED\n'

# --- remove --------------------------------------------------------------------
# The /proc/PID/comm files of every upcased process in the container (minbase
# has no pgrep).
upcased_procs() { in_container sh -c 'grep -l "^upcased$" /proc/[0-9]*/comm' 2>/dev/null; }
check "dpkg -r upcase" in_container dpkg -r upcase
removed() {
    local active load procs
    active=$(in_container systemctl is-active "$svc")
    load=$(unit_prop "$svc" LoadState)
    procs=$(upcased_procs)
    echo "$svc: $active, LoadState=$load; upcased processes: ${procs:-none}"
    # masked: dh_installsystemd's postrm masks an enabled unit on remove, so
    # that its leftover enablement starts nothing (purge unmasks it); "bad"
    # would be a unit still loaded from a file that is gone.
    [ "$active" = inactive ] && { [ "$load" = not-found ] || [ "$load" = masked ]; } && [ -z "$procs" ]
}
check "remove stopped $svc, no upcased process left, the unit is gone or masked" removed
check "remove kept the config (a conffile, until purge)" in_container test -f /etc/upcased/upcased.toml

# --- purge ---------------------------------------------------------------------
check "dpkg -P upcase" in_container dpkg -P upcase
purged() {
    local left
    left=$(in_container sh -c 'ls -d /etc/upcased /etc/systemd/system/*/upcased* /var/lib/systemd/deb-systemd-helper-enabled/*upcased* 2>/dev/null')
    echo "left after purge: ${left:-nothing}"
    [ -z "$left" ]
}
check "purge removed /etc/upcased and the enablement symlinks" purged

# --- remove while socket-activated -------------------------------------------------
# prerm stops every upcased unit, not only the one the package enabled: a
# socket left listening would start a binary that is gone.
check "dpkg -i $(basename "$DEB_NEXT") again (a fresh install)" install_package "$DEB_NEXT"
check "systemctl start $sock (stops $svc)" in_container systemctl start "$sock"
check "socket-activated: TCP answers" expect_reply tcp 12000 $'activated\n' $'ACTIVATED\n'
check "dpkg -r upcase while socket-activated" in_container dpkg -r upcase
all_gone() {
    local u state ok=0 procs
    for u in "$sock" upcased-activated.service "$svc"; do
        state=$(in_container systemctl is-active "$u")
        echo "$u: $state"
        [ "$state" = inactive ] || ok=1
    done
    procs=$(upcased_procs)
    echo "upcased processes: ${procs:-none}"
    [ -z "$procs" ] || ok=1
    return $ok
}
check "remove stopped the socket and the activated service, no upcased process left" all_gone
