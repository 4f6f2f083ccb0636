# shellcheck shell=bash
# The watchdog: holds while the daemon idles, fires when it stops answering
# (SIGSTOP), and systemd restarts it.

check "dpkg -i the package" install_package
svc=upcased.service

# 3 s instead of the unit's 30 s, so that idling several periods is quick
# (the daemon pings every 1.5 s: slack for a loaded machine).
in_container mkdir -p /etc/systemd/system/$svc.d
printf '[Service]\nWatchdogSec=3s\n' >"$RS_WORK/watchdog.conf"
copy_in "$RS_WORK/watchdog.conf" /etc/systemd/system/$svc.d/watchdog.conf
in_container systemctl daemon-reload
check "systemctl restart $svc with WatchdogSec=3s" in_container systemctl restart "$svc"
check "WatchdogUSec is 3s" test "$(unit_prop $svc WatchdogUSec)" = 3s
pid=$(unit_prop "$svc" MainPID)

# Idle for three watchdog periods: systemd would have fired by then if the
# daemon did not ping while it waits for clients.
watchdog_fired() { in_container journalctl -q -b -u "$svc" -o cat | grep -q "Watchdog timeout"; }
# A fixed wait on purpose: what is checked is that nothing happens.
sleep 9
idle_held() {
    local now restarts
    now=$(unit_prop "$svc" MainPID)
    restarts=$(unit_prop "$svc" NRestarts)
    echo "MainPID $pid -> $now, NRestarts=$restarts"
    ! watchdog_fired && [ "$now" = "$pid" ] && [ "$restarts" = 0 ]
}
check "idle for 9 s (3 periods): no watchdog timeout, same process" idle_held

# (the shell's kill: minbase has no /bin/kill)
in_container /bin/sh -c 'kill -STOP "$1"' sh "$pid"
check "SIGSTOPped: journal says 'Watchdog timeout'" wait_for 30 watchdog_fired
restarted() {
    local now
    now=$(unit_prop "$svc" MainPID)
    [ "$(in_container systemctl is-active "$svc")" = active ] && [ "$now" != 0 ] && [ "$now" != "$pid" ]
}
check "systemd restarted it (new MainPID, active)" wait_for 60 restarted
check "the restarted daemon answers" expect_reply tcp 12000 $'woke\n' $'WOKE\n'
