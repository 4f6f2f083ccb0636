# shellcheck shell=bash
# Restarts and upgrades that no client notices (issue 14 C): under load,
# `upcase-bench tcp -c 100 -p 4 --payload utf8` streaming while a loop of
# short nc connections runs, `systemctl restart` (then a package upgrade,
# then the socket-activated unit's restart) in the middle: the bench
# verifies every byte and sees no connection reset or closed, no short
# connection fails. The pause clients saw (the bench's max latency) and the
# daemon's own account ("handed over N", "adopted N") are printed.

# The package's own load generator, run on the host in the container's
# network namespace (whatever target directory built the package).
mkdir -p "$RS_WORK/deb"
dpkg-deb -x "$DEB" "$RS_WORK/deb"
bench=$RS_WORK/deb/usr/bin/upcase-bench
svc=upcased.service
act=upcased-activated.service
sock=upcased.socket

check "dpkg -i the package" install_package
in_container systemctl start "$svc"
check "$svc is active" wait_for 30 unit_is "$svc" active
check "the unit keeps a store of 10240 descriptors" \
    test "$(unit_prop "$svc" FileDescriptorStoreMax)" = 10240

# Established TCP connections to the container's port 12000.
established() {
    in_netns ss -Htn state established '( dport = :12000 )' | wc -l
}
at_least_100() { [ "$(established)" -ge 100 ]; }

# under_load NAME UNIT ACTION...: the bench and the short-connection loop
# run against port 12000 while ACTION happens in the middle of the bench's
# measured window. Leaves bench.json, short.txt and action.txt in
# $RS_WORK/NAME.
under_load() {
    local name=$1 unit=$2 dir=$RS_WORK/$1
    shift 2
    mkdir -p "$dir"
    in_netns "$bench" tcp -c 100 -p 4 --payload utf8 --duration 8s --warmup 1s \
        --json >"$dir/bench.json" 2>"$dir/bench.err" &
    local bench_pid=$!
    # Short connections, one after another, each one line and a half-close,
    # the reply checked; until the bench is done.
    in_netns bash -c '
        n=0 fails=0
        while kill -0 "$1" 2>/dev/null; do
            n=$((n + 1))
            got=$(printf "short %d\n" "$n" | timeout 10 nc -N 127.0.0.1 12000)
            [ "$got" = "SHORT $n" ] || { fails=$((fails + 1)); echo "short $n: got [$got]" >&2; }
        done
        echo "$n $fails"' short "$bench_pid" >"$dir/short.txt" 2>"$dir/short.err" &
    local short_pid=$!
    wait_for 30 at_least_100
    # 1 s of warm-up, then 3 s into the 8 s measured: the middle.
    sleep 4
    local before after status
    before=$(unit_prop "$unit" MainPID)
    # Only this run's journal is looked at afterwards.
    in_container journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p' >"$dir/cursor"
    "$@" >"$dir/action.txt" 2>&1
    echo "action exit $?" >>"$dir/action.txt"
    wait "$bench_pid"
    status=$?
    echo "bench exit $status" >>"$dir/action.txt"
    wait "$short_pid"
    after=$(unit_prop "$unit" MainPID)
    echo "MainPID $before -> $after" >>"$dir/action.txt"
}

# A new process runs the unit (ACTION restarted it).
new_process() {
    local line
    line=$(grep MainPID "$1/action.txt")
    echo "$line"
    read -r _ before _ after <<<"$line"
    [ "$before" != "$after" ] && [ "$after" != 0 ]
}

# The unit's journal since the action of run DIR has a line matching
# PATTERN (printed with its monotonic time stamp).
journal_says() {
    in_container journalctl -q -o short-monotonic -u "$2" --after-cursor "$(cat "$1/cursor")" |
        grep -E "$3"
}

# report NAME UNIT: the verdicts of one run under load, and its figures.
report() {
    local name=$1 unit=$2 dir=$RS_WORK/$1
    local n fails max ok
    read -r n fails <"$dir/short.txt"
    max=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_us"]["max"])' "$dir/bench.json" 2>/dev/null)
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$dir/bench.json" 2>/dev/null)
    echo "FIGURES $name: bench ok=$ok, max latency ${max:-?} us; short connections: ${n:-?} made, ${fails:-?} failed"
    if ! grep -q "bench exit 0" "$dir/action.txt"; then
        sed "s/^/  $name bench: /" "$dir/bench.err" | tail -n 20
    fi
    sed "s/^/  $name short: /" "$dir/short.err" | tail -n 5
    check "$name: the action succeeded" grep -q "action exit 0" "$dir/action.txt"
    check "$name: a new process serves" new_process "$dir"
    check "$name: the bench verified every byte, no connection reset or closed" \
        grep -q "bench exit 0" "$dir/action.txt"
    check "$name: 0 short connections failed (of ${n:-?})" test "${fails:-1}" = 0
    check "$name: the old process handed the connections over" \
        journal_says "$dir" "$unit" 'handed over [0-9]{3} connections'
    check "$name: the new process adopted them" \
        journal_says "$dir" "$unit" 'adopted [0-9]{3} connections'
    journal_says "$dir" "$unit" 'handing over|handed over|adopted|not handed over|cannot|taken from|Stopping|Starting|Started' |
        tail -n 8 | sed "s/^/  $name journal: /"
}

restart_unit() { in_container systemctl restart "$1"; }

under_load restart "$svc" restart_unit "$svc"
report restart "$svc"

# dpkg -i of the newer package: its maintainer scripts restart the service
# (issue 14 item 6), and the running process must then be the new binary.
upgrade() {
    local pid
    pid=$(unit_prop "$svc" MainPID)
    install_package "$DEB_NEXT" || return 1
    echo "package: main pid $pid then $(unit_prop "$svc" MainPID)"
}
under_load upgrade "$svc" upgrade
restarted_by_the_package() {
    local before after
    read -r _ _ _ before _ after < <(grep '^package: main pid' "$RS_WORK/upgrade/action.txt")
    echo "main pid $before before dpkg -i, $after after"
    [ -n "$before" ] && [ -n "$after" ] && [ "$before" != "$after" ]
}
check "upgrade: the package's scripts restarted $svc (no systemctl restart by hand)" restarted_by_the_package
report upgrade "$svc"
runs_the_new_binary() {
    local line ok=0
    line=$(runs_installed_binary "$svc") || ok=1
    echo "MainPID $line"
    [ "$ok" = 0 ] && [ "$(in_container dpkg-query -W -f '${Version}' upcase)" = "$DEB_NEXT_VERSION" ]
}
check "upgrade: the connections are served by the new binary ($DEB_NEXT_VERSION)" runs_the_new_binary

# --- the socket-activated unit: the listeners are the socket's ------------------
in_container systemctl stop "$svc"
check "systemctl start $sock" in_container systemctl start "$sock"
check "the first client starts $act" expect_reply tcp 12000 $'first\n' $'FIRST\n'
check "$act is active" wait_for 30 unit_is "$act" active
under_load activated "$act" restart_unit "$act"
report activated "$act"

# --- a real stop closes what the store kept: clients see EOF, not a hang ------
# A client answered, then waiting: the stop hands its connection to the
# store, which systemd closes once the unit is stopped.
held=$RS_WORK/held.txt
in_netns python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 12000), 5)
s.settimeout(30)
s.sendall(b"held\n")
got = b""
while len(got) < 5:
    got += s.recv(64)
print("answered", got, flush=True)
rest = s.recv(64)
print("eof" if rest == b"" else "more %r" % rest, flush=True)' >"$held" 2>&1 &
held_pid=$!
answered() { grep -q answered "$held"; }
check "a client is answered before the stop" wait_for 30 answered
in_container systemctl stop "$sock" "$act"
wait "$held_pid"
check "stop: the waiting client got a clean EOF ($(tail -n 1 "$held"))" grep -qx eof "$held"
check "after stop, nothing listens on 12000" \
    bash -c "! printf x | timeout 5 nsenter -t $RS_INIT -n nc -N 127.0.0.1 12000"
