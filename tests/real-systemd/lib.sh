# shellcheck shell=bash
# The real-systemd harness's library, sourced by tests/real-systemd/run.
# The API a check group (checks/NN-name.sh) may use is documented in
# tests/real-systemd/README.md; everything named rs_* here is the harness's
# own and may change.

# --- output ------------------------------------------------------------------

say() { printf 'real-systemd: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# pass NAME / fail NAME [DETAIL...]: one result line, counted by the harness.
pass() {
    printf 'PASS: %s\n' "$1"
    echo PASS >>"$RS_RESULTS"
}
fail() {
    printf 'FAIL: %s\n' "$1"
    shift
    [ $# -eq 0 ] || printf '%s\n' "$@" | sed 's/^/    /'
    echo FAIL >>"$RS_RESULTS"
    return 1
}

# check NAME CMD...: runs CMD (a command or a shell function of the group)
# with its output captured; PASS if it exits 0, else FAIL followed by the
# last 40 lines of what it printed. Returns CMD's status.
check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        pass "$name"
    else
        fail "$name" "(exit $rc)" "$(tail -n 40 <<<"$out")"
    fi
    return $rc
}

# wait_for TIMEOUT CMD...: runs CMD every 0.1 s until it succeeds (0) or
# TIMEOUT seconds have passed (1). CMD's output is discarded; for a value,
# let CMD store it in a variable of the group.
wait_for() {
    local deadline
    deadline=$(($(date +%s) + $1))
    shift
    while true; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# --- inside the container ------------------------------------------------------

# in_container CMD...: runs CMD inside the booted container (all of its
# namespaces: its root, its PID 1's systemd, its network), as root, with a
# clean environment; standard input is passed on. Bounded by RS_CMD_TIMEOUT
# seconds (default 120).
in_container() {
    timeout "${RS_CMD_TIMEOUT:-120}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        nsenter -t "$RS_INIT" -a "$@"
}

# in_netns CMD...: runs a HOST command (nc, socat, python3 of the machine
# running the harness) in the container's network namespace only, so it
# reaches the container's 127.0.0.1. Bounded like in_container.
in_netns() {
    timeout "${RS_CMD_TIMEOUT:-120}" nsenter -t "$RS_INIT" -n "$@"
}

# copy_in SRC DEST [MODE]: copies a host file into the container as DEST
# (mode 0644 unless MODE is given).
copy_in() {
    in_container install -D -m "${3:-0644}" /dev/stdin "$2" <"$1"
}

# install_package [DEB]: dpkg -i of DEB (default $DEB) inside the container;
# dpkg's output goes to the group's output on failure. Returns dpkg's status.
install_package() {
    local deb=${1:-$DEB} out
    copy_in "$deb" "/var/tmp/$(basename "$deb")" || return 1
    out=$(in_container env DEBIAN_FRONTEND=noninteractive dpkg -i "/var/tmp/$(basename "$deb")" 2>&1) ||
        { printf '%s\n' "$out"; return 1; }
}

# tcp_reply PORT INPUT: INPUT sent to 127.0.0.1:PORT in the container by the
# host's nc, which half-closes after it; prints every byte of the reply
# (until the server closes).
tcp_reply() {
    printf '%s' "$2" | in_netns timeout 10 nc -N 127.0.0.1 "$1"
}

# udp_reply PORT INPUT: INPUT as one datagram to 127.0.0.1:PORT in the
# container; prints the reply datagram's bytes, fails after 5 s without one.
udp_reply() {
    in_netns python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(sys.argv[2].encode(), ("127.0.0.1", int(sys.argv[1])))
sys.stdout.buffer.write(s.recv(65536))' "$1" "$2"
}

# expect_reply tcp|udp PORT INPUT WANT: the reply is exactly WANT (every
# byte, trailing newlines included); else prints what came and fails.
expect_reply() {
    local got
    got=$("${1}_reply" "$2" "$3"; printf x)
    got=${got%x}
    [ "$got" = "$4" ] && return 0
    printf '%s %s: sent %q, expected %q, got %q\n' "$1" "$2" "$3" "$4" "$got"
    return 1
}

# unit_prop UNIT PROPERTY: the value of one property (systemctl show).
unit_prop() {
    in_container systemctl show -p "$2" --value "$1"
}

# unit_is UNIT STATE: systemctl is-active UNIT prints STATE.
unit_is() {
    [ "$(in_container systemctl is-active "$1")" = "$2" ]
}

# runs_installed_binary UNIT: UNIT's main process runs the file installed
# at /usr/bin/upcased now (dpkg replaces it with a new inode; a process not
# restarted still runs the deleted old one). Prints its MainPID as the first
# word.
runs_installed_binary() {
    local pid exe file
    pid=$(unit_prop "$1" MainPID)
    exe=$(in_container stat -L -c %i "/proc/$pid/exe")
    file=$(in_container stat -c %i /usr/bin/upcased)
    echo "$pid: /proc/$pid/exe inode $exe, /usr/bin/upcased inode $file"
    [ "$pid" != 0 ] && [ -n "$exe" ] && [ "$exe" = "$file" ]
}

# reboot_container: powers the container off and boots it again on the same
# writable layer: what was installed, enabled or written survives, as on a
# real reboot. RS_INIT is the new PID 1, so call it in the group itself, not
# inside check or a $(...): a subshell would lose the new container.
reboot_container() {
    rs_poweroff && rs_boot
}

# --- the harness's own: cgroups, overlay, boot, cleanup -------------------------

# One cgroup of our own below our current one on every mounted hierarchy
# (cgroup v1 controllers, the named systemd one, and cgroup v2): nspawn and the
# container's systemd then manage a subtree nothing else uses, and cleanup can
# find and kill everything by cgroup. Sets RS_CGROUPS.
rs_make_cgroups() {
    local ctrls path mnt m opts root fstype want ok c d
    RS_CGROUPS=()
    # /proc/self/cgroup: ID:CONTROLLERS:PATH (CONTROLLERS empty for v2)
    while IFS=: read -r _ ctrls path; do
        mnt=
        # mountinfo: … MOUNTPOINT … - FSTYPE SOURCE SUPEROPTS; field 4 = root
        while read -r root m fstype opts; do
            if [ -z "$ctrls" ]; then
                [ "$fstype" = cgroup2 ] && { mnt=$m; break; }
            else
                [ "$fstype" = cgroup ] || continue
                ok=1
                IFS=, read -ra want <<<"$ctrls"
                for c in "${want[@]}"; do
                    case ",$opts," in *",$c,"*) ;; *) ok=0 ;; esac
                done
                [ $ok = 1 ] && { mnt=$m; break; }
            fi
        done < <(awk '{ for (i = 7; $i != "-"; i++); print $4, $5, $(i+1), $(i+3) }' /proc/self/mountinfo)
        [ -n "$mnt" ] || continue # hierarchy not mounted here
        [ "$root" = / ] || path=${path#"$root"}
        d=$mnt${path%/}/$MACHINE
        mkdir "$d" || return 1
        RS_CGROUPS+=("$d")
        # cgroup v1 cpuset: a new cgroup has no CPUs or memory nodes until
        # given some, and no task can join it before.
        for c in cpuset.cpus cpuset.mems; do
            [ -e "$d/$c" ] && cat "$(dirname "$d")/$c" >"$d/$c"
        done
    done </proc/self/cgroup
    [ ${#RS_CGROUPS[@]} -gt 0 ] || die "no cgroup hierarchy found in /proc/self/mountinfo"
}

# Kill every process left in our cgroups (all hierarchies, all sub-cgroups).
rs_kill_cgroups() {
    local d f pid
    for d in "${RS_CGROUPS[@]}"; do
        [ -d "$d" ] || continue
        # cgroup v2 (kernel >= 5.14): kills the whole subtree at once.
        [ -e "$d/cgroup.kill" ] && { echo 1 >"$d/cgroup.kill"; } 2>/dev/null
        while IFS= read -r f; do
            while IFS= read -r pid; do
                kill -KILL "$pid" 2>/dev/null || true
            done <"$f"
        done < <(find "$d" -name cgroup.procs 2>/dev/null)
    done
    return 0
}

# True if no process is left in any of our cgroups.
rs_cgroups_empty() {
    local d f
    for d in "${RS_CGROUPS[@]}"; do
        [ -d "$d" ] || continue
        # (cgroupfs files have size 0 for stat: read one, do not test -s)
        while IFS= read -r f; do
            [ -n "$(head -c 1 "$f" 2>/dev/null)" ] && return 1
        done < <(find "$d" -name cgroup.procs 2>/dev/null)
    done
    return 0
}

# Empties our cgroups and removes the sub-cgroups the container's systemd
# made (KEEP_TOP=1: keep our own, for the next boot; else remove them too).
rs_clear_cgroups() {
    local d
    for _ in $(seq 100); do
        rs_cgroups_empty && break
        rs_kill_cgroups
        sleep 0.1
    done
    rs_cgroups_empty || say "warning: processes left in ${RS_CGROUPS[*]}"
    for d in "${RS_CGROUPS[@]}"; do
        [ -d "$d" ] || continue
        if [ "${KEEP_TOP:-0}" = 1 ]; then
            find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        else
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$d" ] && say "warning: cannot remove cgroup $d"
        fi
    done
    return 0
}

# Unmount everything at or below $1 (deepest first): debootstrap mounts
# proc/sys/dev into its target and leaves them if it is interrupted; the
# container's overlay and its tmpfs are ours.
rs_umount_below() {
    local m
    awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while IFS= read -r m; do umount -l "$m" || true; done
}

# PID (host view) of the container's PID 1: the process in our cgroups whose
# innermost PID namespace id is 1 and which is in a PID namespace below ours,
# once it runs systemd.
rs_container_init() {
    local f pid
    while IFS= read -r f; do
        while IFS= read -r pid; do
            awk '/^NSpid:/ { exit !(NF == 3 && $3 == 1) }' "/proc/$pid/status" 2>/dev/null || continue
            # Until it execs the init, that process is still nspawn's inner
            # child, with the container's root not yet in place.
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] || continue
            echo "$pid"
            return 0
        done <"$f"
    done < <(find "${RS_CGROUPS[@]}" -name cgroup.procs 2>/dev/null)
    return 1
}

# The container's root: an overlay of the cached rootfs (never written) and
# a writable layer on a tmpfs of our own, kept across reboot_container and
# dropped at the end of the group.
rs_make_root() {
    RS_CT=$RS_WORK/$MACHINE
    mkdir -p "$RS_CT"
    mount -t tmpfs -o mode=0755 "rs-$MACHINE" "$RS_CT" || return 1
    mkdir "$RS_CT/upper" "$RS_CT/work" "$RS_CT/root"
    mount -t overlay overlay \
        -o "lowerdir=$ROOTFS,upperdir=$RS_CT/upper,workdir=$RS_CT/work" "$RS_CT/root"
}

# Boots the container (nspawn in our cgroups) and waits until its manager
# reports the end of start-up. Sets RS_NSPAWN and RS_INIT.
rs_boot() {
    local t0 deadline left state d
    t0=$(now)
    (
        for d in "${RS_CGROUPS[@]}"; do echo "$BASHPID" >"$d/cgroup.procs"; done
        # The container gets a pure cgroup v2 tree even on a hybrid host;
        # without the bpf filter entry the payload cannot load BPF programs,
        # and IPAddressDeny= would be silently not enforced.
        exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn \
            --quiet --boot --directory="$RS_CT/root" \
            --machine="$MACHINE" --register=no --keep-unit --private-network \
            --system-call-filter=bpf --console=read-only
    ) >>"$RS_CT.log" 2>&1 </dev/null &
    RS_NSPAWN=$!
    # Wait for the container's PID 1 to appear, then for the boot to finish:
    # systemctl is-system-running --wait blocks until the manager reports
    # the end of startup; before its bus is up it fails at once, so retry.
    deadline=$(($(date +%s) + BOOT_TIMEOUT))
    RS_INIT=
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if ! kill -0 "$RS_NSPAWN" 2>/dev/null; then
            cat "$RS_CT.log" >&2
            say "systemd-nspawn exited during boot (log above)"
            return 1
        fi
        if [ -z "$RS_INIT" ]; then
            RS_INIT=$(rs_container_init) || { RS_INIT=; sleep 0.05; continue; }
        fi
        left=$((deadline - $(date +%s)))
        state=$(RS_CMD_TIMEOUT=$((left > 0 ? left : 1)) in_container systemctl is-system-running --wait 2>/dev/null)
        case $state in running | degraded | maintenance | stopping)
            say "$MACHINE up ($state) after $(secs "$t0" "$(now)") s"
            # For the harness's shell, when this one is a group's subshell
            # (reboot_container).
            printf 'RS_NSPAWN=%s RS_INIT=%s\n' "$RS_NSPAWN" "$RS_INIT" >"$RS_CT.state"
            return 0
            ;;
        esac
        sleep 0.05
    done
    cat "$RS_CT.log" >&2
    say "system not up within $BOOT_TIMEOUT s (state '${state:-unknown}'; nspawn log above)"
    return 1
}

# Powers the container off (SIGTERM to nspawn: an orderly poweroff of the
# container's systemd), kills it after 30 s, and empties our cgroups for the
# next boot.
rs_poweroff() {
    if [ -n "${RS_NSPAWN:-}" ] && kill -0 "$RS_NSPAWN" 2>/dev/null; then
        kill -TERM "$RS_NSPAWN" || true
        timeout 30 tail --pid="$RS_NSPAWN" -s 0.1 -f /dev/null || true
        if kill -0 "$RS_NSPAWN" 2>/dev/null; then
            say "nspawn did not stop in 30 s; killing it"
            kill -KILL "$RS_NSPAWN" || true
        fi
        # (not our child when a group's subshell rebooted the container)
        wait "$RS_NSPAWN" 2>/dev/null || true
    fi
    RS_NSPAWN=
    RS_INIT=
    KEEP_TOP=1 rs_clear_cgroups
}

# Everything a group made: the container, its cgroups, its overlay.
rs_teardown() {
    rs_poweroff
    rs_clear_cgroups
    RS_CGROUPS=()
    if [ -n "${RS_CT:-}" ]; then
        rs_umount_below "$RS_CT"
        rmdir "$RS_CT" 2>/dev/null || true
        rm -f "$RS_CT.log" "$RS_CT.state"
    fi
    return 0
}
