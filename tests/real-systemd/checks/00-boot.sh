# shellcheck shell=bash
# The container itself, before any package: what every other group relies on.

# nsenter reached this container (its hostname is the machine name nspawn
# set) and its PID 1 is systemd 252 (Debian 12), not something else answering.
pid1_is_systemd_252() {
    local ver pid1 host
    ver=$(in_container systemctl --version | head -n 1)
    pid1=$(in_container cat /proc/1/comm)
    host=$(in_container cat /proc/sys/kernel/hostname)
    echo "PID 1 of '$host' is '$pid1' ('$ver')"
    [ "$pid1" = systemd ] && [[ $ver == "systemd 252 "* ]] && [ "$host" = "$MACHINE" ]
}
check "PID 1 is systemd 252 in this container" pid1_is_systemd_252

system_running() {
    local state
    state=$(in_container systemctl is-system-running)
    echo "state: $state"
    in_container systemctl --failed --no-pager --no-legend
    [ "$state" = running ]
}
check "systemctl is-system-running: running" system_running

# A transient service: the manager can create cgroups and run a unit.
check "systemd-run --wait: a transient service ran and succeeded" \
    in_container systemd-run --wait --quiet --property=Type=exec /bin/sh -c 'exit 0'

# The BPF cgroup firewall works: with IPAddressDeny=any a UDP send fails
# with EPERM. Without --system-call-filter=bpf nspawn's seccomp filter
# refuses bpf(2) and systemd silently runs the unit unfiltered (the send
# succeeds), so this guards the nspawn options.
ip_address_deny_enforced() {
    local udp_send='echo x >/dev/udp/127.0.0.1/9' out
    out=$(in_container systemd-run --wait --pipe --quiet --property=Type=exec \
        /bin/bash -c "$udp_send" 2>&1) || { echo "send without IPAddressDeny failed: $out"; return 1; }
    if out=$(in_container systemd-run --wait --pipe --quiet --property=Type=exec \
        --property=IPAddressDeny=any /bin/bash -c "$udp_send" 2>&1); then
        echo "IPAddressDeny=any not enforced: the UDP send succeeded"
        return 1
    fi
    echo "$out"
    [[ $out == *"Operation not permitted"* ]]
}
check "IPAddressDeny=any enforced (send: Operation not permitted)" ip_address_deny_enforced

# journald round trip: a line logged inside is read back by journalctl.
marker="upcase-boot-marker-$$-$RANDOM"
journal_has_marker() {
    [ "$(in_container journalctl -q -b -t upcase-boot -o cat --no-pager)" = "$marker" ]
}
in_container systemd-cat -t upcase-boot -p notice echo "$marker"
check "journalctl reads back the line logged with systemd-cat" wait_for 10 journal_has_marker
