# shellcheck shell=bash
# What an operator sees (issue 16): `systemctl status` says something
# current, the connection records are in the journal with fields of their
# own, and the metrics endpoint answers.

check "dpkg -i the package" install_package

conf=/etc/upcased/upcased.toml
svc=upcased.service

# The shipped config has log_connections = false and [metrics] listen = [];
# [agent] has an empty listen list too, so only the one after [metrics]
# changes. Port 12002: 12001 is the agent check's documented port.
in_container sed -i -e 's/^log_connections = false$/log_connections = true/' \
    -e '/^\[metrics\]$/,/^listen = / s/^listen = \[\]$/listen = ["127.0.0.1:12002"]/' "$conf"
check "systemctl restart $svc" in_container systemctl restart "$svc"
check "$svc reaches active" wait_for 30 unit_is "$svc" active
check "TCP 127.0.0.1:12000 answers" expect_reply tcp 12000 $'records\n' $'RECORDS\n'

# STATUS= is renewed every 2 s while serving.
status_serving() {
    in_container systemctl status --no-pager "$svc" |
        grep -E 'Status: "serving [0-9,]+ connections?, [0-9,]+ msgs/s, [0-9,]+ errors?"'
}
check "systemctl status shows 'serving N connections, N msgs/s, N errors'" \
    wait_for 15 status_serving

# The record went to journald natively: its own fields match.
record_by_field() {
    in_container journalctl -q -b -u "$svc" CLOSE_REASON=done -o cat --no-pager |
        grep -qE '^connection peer=127\.0\.0\.1:[0-9]+ duration_usec=[0-9]+ bytes_in=8 bytes_out=8 close_reason=done$'
}
check "journalctl -u $svc CLOSE_REASON=done finds the connection's record" \
    wait_for 10 record_by_field

scrape() {
    in_netns python3 -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:12002/metrics", timeout=5).read().decode()
sys.exit(0 if "\nupcased_connections_closed_total{reason=\"done\"} 1\n" in body else 1)'
}
check "GET http://127.0.0.1:12002/metrics counts the connection" scrape
