# shellcheck shell=bash
# upcased@.service with the SHIPPED config: instances 0, 1 and one beyond
# the container's CPU count share 127.0.0.1:12000 (SO_REUSEPORT).

check "dpkg -i the package" install_package
in_container systemctl stop upcased.service

cpus=$(in_container nproc --all)
beyond=$((cpus + 1))
instances=(upcased@0.service upcased@1.service "upcased@$beyond.service")

check "systemctl start ${instances[*]} ($cpus CPUs)" in_container systemctl start "${instances[@]}"

# Active, never restarted, its MainPID answering.
instances_up() {
    local u state restarts ok=0
    for u in "${instances[@]}"; do
        state=$(in_container systemctl is-active "$u")
        restarts=$(unit_prop "$u" NRestarts)
        echo "$u: $state, NRestarts=$restarts, $(unit_prop "$u" StatusText)"
        [ "$state" = active ] && [ "$restarts" = 0 ] || ok=1
    done
    return $ok
}
check "all three instances active, none restarted" instances_up

# SO_REUSEPORT works across processes only for the same effective user: the
# dynamic user of every instance is "upcased" (the unit name's prefix).
same_user() {
    local u pid uid uids=()
    for u in "${instances[@]}"; do
        pid=$(unit_prop "$u" MainPID)
        uid=$(in_container awk '/^Uid:/ { print $3 }' "/proc/$pid/status")
        echo "$u: MainPID $pid, euid $uid, User=$(unit_prop "$u" User)"
        uids+=("$uid")
    done
    [ "${uids[0]}" != 0 ] && [ "${uids[0]}" = "${uids[1]}" ] && [ "${uids[1]}" = "${uids[2]}" ]
}
check "the instances run as one dynamic user (not root)" same_user

check "TCP 127.0.0.1:12000 answers (one of the instances)" expect_reply tcp 12000 $'scale\n' $'SCALE\n'
check "UDP 127.0.0.1:12000 answers (one of the instances)" expect_reply udp 12000 'out' 'OUT'

no_failed() {
    local failed
    failed=$(in_container systemctl --failed --no-legend --plain)
    echo "systemctl --failed: ${failed:-(empty)}"
    [ -z "$failed" ]
}
check "no unit failed" no_failed
check "systemctl stop the instances" in_container systemctl stop "${instances[@]}"
