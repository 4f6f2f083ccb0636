# shellcheck shell=bash
# The package the Debian way: install enables and starts upcased.service
# (the socket stays opt-in), an upgrade restarts it with the new binary,
# remove stops it, purge removes the config.

svc=upcased.service
sock=upcased.socket

check "dpkg -i $(basename "$DEB") ($DEB_VERSION)" install_package "$DEB"

enabled_and_running() {
    local enabled active
    enabled=$(in_container systemctl is-enabled "$svc")
    active=$(in_container systemctl is-active "$svc")
    echo "$svc: $enabled, $active"
    [ "$enabled" = enabled ] && [ "$active" = active ]
}
check "install enabled and started $svc" enabled_and_running
socket_untouched() {
    local enabled active
    enabled=$(in_container systemctl is-enabled "$sock")
    active=$(in_container systemctl is-active "$sock")
    echo "$sock: $enabled, $active"
    [ "$enabled" = disabled ] && [ "$active" = inactive ]
}
check "install left $sock disabled and stopped (opt-in)" socket_untouched
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
    local now exe file
    now=$(unit_prop "$svc" MainPID)
    exe=$(in_container stat -L -c %i "/proc/$now/exe")
    file=$(in_container stat -c %i /usr/bin/upcased)
    echo "MainPID $pid -> $now; /proc/$now/exe inode $exe, /usr/bin/upcased inode $file"
    [ "$now" != "$pid" ] && [ "$now" != 0 ] && [ "$exe" = "$file" ] &&
        [ "$(in_container systemctl is-active "$svc")" = active ]
}
check "the upgrade restarted $svc with the new binary" new_binary
check "upgrade: no unit file changed on disk since the last daemon-reload" no_reload_needed
check "upgraded: TCP answers" expect_reply tcp 12000 $'upgraded\n' $'UPGRADED\n'

# --- remove --------------------------------------------------------------------
check "dpkg -r upcase" in_container dpkg -r upcase
removed() {
    local active load procs
    active=$(in_container systemctl is-active "$svc")
    load=$(unit_prop "$svc" LoadState)
    procs=$(in_container sh -c 'grep -l "^upcased$" /proc/[0-9]*/comm' 2>/dev/null)
    echo "$svc: $active, LoadState=$load; upcased processes: ${procs:-none}"
    [ "$active" = inactive ] && [ "$load" = not-found ] && [ -z "$procs" ]
}
check "remove stopped $svc, no upcased process left, the unit is gone" removed
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
