# shellcheck shell=bash
# Socket activation (upcased.socket + upcased-activated.service), and the
# socket and the plain service excluding each other in either order.

check "dpkg -i the package" install_package

sock=upcased.socket
act=upcased-activated.service
svc=upcased.service

# Nothing failed and the system is not degraded: what the operator's
# monitoring sees.
nothing_failed() {
    local failed state
    failed=$(in_container systemctl --failed --no-legend --plain)
    state=$(in_container systemctl is-system-running)
    echo "is-system-running: $state; systemctl --failed: ${failed:-(empty)}"
    [ -z "$failed" ] && [ "$state" = running ]
}
# Units in one state, e.g. all_are inactive A B.
all_are() {
    local want=$1 u got ok=0
    shift
    for u in "$@"; do
        got=$(in_container systemctl is-active "$u")
        echo "$u: $got"
        [ "$got" = "$want" ] || ok=1
    done
    return $ok
}

in_container systemctl stop "$svc"

# --- TCP first ----------------------------------------------------------------
check "systemctl start $sock" in_container systemctl start "$sock"
check "$act is not running before the first client" all_are inactive "$act"
check "socket-activated: the first client (TCP) is answered" \
    expect_reply tcp 12000 $'first \xc3\x9f\n' $'FIRST SS\n'
check "the TCP client started $act" wait_for 30 all_are active "$act"
check "socket-activated: UDP is answered too" expect_reply udp 12000 'udp' 'UDP'
check "journal: $act adopted the sockets" wait_for 10 \
    in_container sh -c "journalctl -q -b -u $act -o cat | grep -F 'listening on tcp://127.0.0.1:12000'"

# --- UDP first ----------------------------------------------------------------
check "systemctl stop $act $sock" in_container systemctl stop "$act" "$sock"
check "systemctl start $sock (again)" in_container systemctl start "$sock"
check "socket-activated: the first client (UDP) is answered" \
    expect_reply udp 12000 $'\xc3\xa9t\xc3\xa9' $'\xc3\x89T\xc3\x89'
check "the UDP client started $act" wait_for 30 all_are active "$act"
check "socket-activated: TCP is answered too" expect_reply tcp 12000 $'tcp\n' $'TCP\n'
check "no unit failed, system running (socket activation)" nothing_failed

# --- the service started while the socket runs ---------------------------------
check "systemctl start $svc while $sock runs" in_container systemctl start "$svc"
service_alone() { all_are active "$svc" && all_are inactive "$sock" "$act"; }
check "$svc active, $sock and $act stopped" service_alone
check "$svc answers (it bound 127.0.0.1:12000 itself)" expect_reply tcp 12000 $'svc\n' $'SVC\n'
check "no unit failed, system running (service after socket)" nothing_failed

# --- the socket started while the service runs ----------------------------------
check "systemctl start $sock while $svc runs" in_container systemctl start "$sock"
socket_alone() { all_are active "$sock" && all_are inactive "$svc"; }
check "$sock active, $svc stopped" socket_alone
svc_stopped_cleanly() {
    local result status
    result=$(unit_prop "$svc" Result)
    status=$(unit_prop "$svc" ExecMainStatus)
    echo "$svc: Result=$result ExecMainStatus=$status"
    [ "$result" = success ] && [ "$status" = 0 ]
}
check "$svc was stopped gracefully (result success, exit 0)" svc_stopped_cleanly
check "socket-activated after the service: TCP answered" expect_reply tcp 12000 $'sock\n' $'SOCK\n'
check "no unit failed, system running (socket after service)" nothing_failed

# --- both enabled, at boot -------------------------------------------------------
check "systemctl enable $svc $sock" in_container systemctl enable "$svc" "$sock"
# Not in check: the new container's PID must reach this shell.
if reboot_container; then pass "reboot with both enabled"; else fail "reboot with both enabled"; fi
# One of the two serves, the other is stopped; neither is in a restart loop
# (activating) on its way to failing.
one_of_them() {
    local s k
    s=$(in_container systemctl is-active "$svc")
    k=$(in_container systemctl is-active "$sock")
    echo "$svc: $s, $sock: $k"
    [ "$s $k" = "active inactive" ] || [ "$s $k" = "inactive active" ]
}
check "boot with both enabled: one of $svc and $sock runs, the other is stopped" one_of_them
check "no unit failed, system running (boot with both enabled)" nothing_failed
check "after the boot with both enabled TCP is answered" expect_reply tcp 12000 $'boot\n' $'BOOT\n'
