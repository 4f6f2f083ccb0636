# shellcheck shell=bash
# upcased.service, the plain setup: start, serve, reload, journal, stop.

check "dpkg -i the package" install_package

conf=/etc/upcased/upcased.toml
svc=upcased.service

# How the main process ended, as systemd saw it: once the unit is inactive
# and unreferenced, systemd unloads it and `systemctl show` forgets its
# exit status, so a drop-in logs it (`+`: outside the sandbox, as root).
in_container mkdir -p /etc/systemd/system/$svc.d
printf '%s\n' '[Service]' \
    "ExecStopPost=+/bin/sh -c 'echo \"stop-post: \$SERVICE_RESULT \$EXIT_CODE \$EXIT_STATUS\"'" \
    >"$RS_WORK/exit.conf"
copy_in "$RS_WORK/exit.conf" /etc/systemd/system/$svc.d/exit.conf
in_container systemctl daemon-reload

# The package may start it already (it should, see 70-package); start is
# idempotent, and the job must succeed.
check "systemctl start $svc" in_container systemctl start "$svc"
check "$svc reaches active" wait_for 30 unit_is "$svc" active

check "TCP 127.0.0.1:12000 answers in upper case (unicode)" \
    expect_reply tcp 12000 $'hello stra\xc3\x9fe\n' $'HELLO STRASSE\n'
check "UDP 127.0.0.1:12000 answers in upper case (unicode)" \
    expect_reply udp 12000 $'datagram \xc3\xa9t\xc3\xa9' $'DATAGRAM \xc3\x89T\xc3\x89'

# Priorities as journald stored them: exactly one level, -p N..N.
journal_at() { in_container journalctl -q -b -u "$svc" -p "$1..$1" -o cat --no-pager; }
journal_has() { journal_at "$1" | grep -qF -- "$2"; }
# (journald reads the stream asynchronously: wait for the line)
check "journal: 'listening on tcp://127.0.0.1:12000' at priority 6 (info)" \
    wait_for 10 journal_has 6 "listening on tcp://127.0.0.1:12000"
# ExecStartPre's --check-config says nothing when the config is valid: no
# line of the config file (each key's line) in the journal.
no_config_dump() {
    local dumped
    dumped=$(in_container journalctl -q -b -u "$svc" -o cat --no-pager | grep -E '^(reuse_port =|\[tcp\]$|mode =)')
    echo "config lines in the journal: ${dumped:-none}"
    [ -z "$dumped" ]
}
check "journal: ExecStartPre=upcased --check-config logged no config" no_config_dump

# --- reload: a changed config applies ------------------------------------------
pid=$(unit_prop "$svc" MainPID)
in_container sed -i 's/^mode = "unicode"/mode = "ascii"/' "$conf"
check "systemctl reload $svc with mode = \"ascii\" succeeds" in_container systemctl reload "$svc"
reloaded_ascii() { journal_has 6 "configuration reloaded: mode ascii"; }
check "journal: 'configuration reloaded: mode ascii' at priority 6" wait_for 30 reloaded_ascii
# ascii mode leaves ß alone: the new config is the one serving.
check "after the reload TCP answers in ascii mode" \
    expect_reply tcp 12000 $'hello stra\xc3\x9fe\n' $'HELLO STRA\xc3\x9fE\n'
same_pid() {
    local now
    now=$(unit_prop "$svc" MainPID)
    echo "MainPID before $pid, now $now"
    [ "$now" = "$pid" ]
}
check "the reload kept the process (MainPID $pid)" same_pid

# --- reload: a bad config is refused, the old one keeps serving ----------------
in_container cp "$conf" /root/upcased.toml.good
in_container sed -i 's/^mode = "ascii"/mode = "loud"/' "$conf"
reload_refused() {
    if in_container systemctl reload "$svc"; then
        echo "systemctl reload exited 0 with mode = \"loud\" in $conf"
        return 1
    fi
}
check "systemctl reload $svc with a bad config exits non-zero" reload_refused
check "$svc is still active after the refused reload" unit_is "$svc" active
check "after the refused reload TCP still answers in ascii mode" \
    expect_reply tcp 12000 $'still stra\xc3\x9fe\n' $'STILL STRA\xc3\x9fE\n'
check "the refused reload kept the process (MainPID $pid)" same_pid

# The daemon's own verdict on a bad file (SIGHUP without systemctl reload):
# an error, priority 3, and it keeps serving.
in_container systemctl kill -s HUP --kill-who=main "$svc"
hup_refused() { journal_has 3 "reload failed, keeping the current configuration"; }
check "journal: SIGHUP with the bad file logs 'reload failed' at priority 3 (err)" wait_for 30 hup_refused
check "after SIGHUP with the bad file TCP still answers in ascii mode" \
    expect_reply tcp 12000 $'abc\n' $'ABC\n'

# A warning: listen addresses cannot change live.
in_container cp /root/upcased.toml.good "$conf"
in_container sed -i 's/^listen = \["127.0.0.1:12000"\]/listen = ["127.0.0.1:12000", "127.0.0.1:12001"]/' "$conf"
check "systemctl reload $svc with a new listen address succeeds" in_container systemctl reload "$svc"
restart_warned() { journal_has 4 "cannot change live; restart to apply them"; }
check "journal: 'restart to apply them' at priority 4 (warning)" wait_for 30 restart_warned

# --- stop: graceful ---------------------------------------------------------------
check "systemctl stop $svc" in_container systemctl stop "$svc"
stopped_cleanly() {
    local state post
    state=$(in_container systemctl is-active "$svc")
    post=$(in_container journalctl -q -b -u "$svc" -o cat --no-pager | grep '^stop-post: ')
    echo "state $state; $post"
    [ "$state" = inactive ] && [ "$post" = "stop-post: success exited 0" ]
}
wait_for 10 stopped_cleanly
check "stop is graceful: inactive, result success, exit status 0" stopped_cleanly
check "journal: 'shutting down' at priority 6" wait_for 10 journal_has 6 "shutting down"
