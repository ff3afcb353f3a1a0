#!/usr/bin/env bash
# Local lab for volsnap.openstack integration tests: a real libvirtd + virtlogd driving QEMU (TCG).
#
#   tests/lab/lab.sh install   apt-get install the packages that are missing (apt-get update only if needed)
#   tests/lab/lab.sh start     start virtlogd + libvirtd in the background (idempotent), wait for qemu:///system
#   tests/lab/lab.sh stop      remove volsnap-test-* domains, stop the daemons this script started (by PID)
#   tests/lab/lab.sh status    print the state; exit 0 only if libvirt answers
#
# No systemd: the daemons are started by hand and their PIDs recorded under $VOLSNAP_LAB_DIR
# (default /var/tmp/volsnap-lab). Only UNIX sockets are used; no libvirt network is started.
# See tests/lab/README.md.
set -euo pipefail

LAB_DIR=${VOLSNAP_LAB_DIR:-/var/tmp/volsnap-lab}
URI=${VOLSNAP_LIBVIRT_URI:-qemu:///system}
START_TIMEOUT=${VOLSNAP_LAB_START_TIMEOUT:-90}
STOP_TIMEOUT=${VOLSNAP_LAB_STOP_TIMEOUT:-15}
# libvirt log priority: 1 debug, 2 info, 3 warning, 4 error
LOG_LEVEL=${VOLSNAP_LAB_LOG_LEVEL:-3}
DOMAIN_PREFIX=volsnap-test-
PACKAGES=(qemu-utils qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-dev pkg-config
    python3-libvirt)
NET_AUTOSTART_DIR=/etc/libvirt/qemu/networks/autostart

log() { printf 'lab: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_file() { printf '%s/%s.pid' "$LAB_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LAB_DIR" "$1"; }

# Print the PID recorded for daemon $1 if that process is alive and really is $1; else nothing.
live_pid() {
    local name=$1 file pid comm
    file=$(pid_file "$name")
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

# Remove the pid file of daemon $1 if its process is gone (or the PID was reused by another program).
clear_stale() {
    local name=$1 file
    file=$(pid_file "$name")
    if [[ -e $file ]] && ! live_pid "$name" >/dev/null; then
        log "removing stale pid file $file"
        rm -f "$file"
    fi
}

libvirt_answers() {
    timeout 15 virsh -q -c "$URI" version >/dev/null 2>&1
}

lock() {
    mkdir -p "$LAB_DIR"
    chmod 0755 "$LAB_DIR"
    exec 9>"$LAB_DIR/lock"
    flock -w 180 9 || die "another lab.sh holds $LAB_DIR/lock"
}

tail_log() {
    local file=$1
    if [[ -s $file ]]; then
        log "last lines of $file:"
        tail -n 30 "$file" >&2
    fi
}

# ------------------------------------------------------------------------------------------ install

cmd_install() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "all packages installed"
        return 0
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q
    elif apt-get install -y -q "${missing[@]}"; then
        return 0
    else
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get update -q
    fi
    apt-get install -y -q "${missing[@]}"
}

# ------------------------------------------------------------------------------------------ start

require_binaries() {
    local b
    for b in virtlogd libvirtd virsh qemu-img qemu-system-x86_64 flock timeout; do
        command -v "$b" >/dev/null || die "$b not found: run 'bash tests/lab/lab.sh install' first"
    done
}

# libvirtd would start every autostart network (the 'default' NAT network runs dnsmasq and binds
# 192.168.122.1); the lab must not, so drop the autostart marks (the definitions themselves stay).
disable_network_autostart() {
    local link
    [[ -d $NET_AUTOSTART_DIR ]] || return 0
    for link in "$NET_AUTOSTART_DIR"/*.xml; do
        [[ -e $link || -L $link ]] || continue
        log "disabling autostart of libvirt network $(basename "$link" .xml) (the lab binds nothing)"
        rm -f "$link"
    done
}

start_daemon() {
    local name=$1 pid log
    clear_stale "$name"
    if pid=$(live_pid "$name"); then
        log "$name already running (pid $pid)"
        return 0
    fi
    if pid=$(pgrep -x "$name" | head -n 1) && [[ -n $pid ]]; then
        log "$name already running (pid $pid) but not started by the lab: using it"
        return 0
    fi
    log=$(log_file "$name")
    printf '==== %s: starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$log"
    # -d: the daemon forks, writes the pid file and returns once initialised.
    if ! LIBVIRT_LOG_OUTPUTS="$LOG_LEVEL:file:$log" "$name" -d -p "$(pid_file "$name")" >>"$log" 2>&1 9>&-; then
        tail_log "$log"
        die "$name failed to start"
    fi
    pid=$(live_pid "$name") || { tail_log "$log"; die "$name exited right after starting"; }
    log "$name started (pid $pid, log $log)"
}

cmd_start() {
    require_binaries
    lock
    if libvirt_answers && ! live_pid libvirtd >/dev/null; then
        log "libvirt already answers at $URI (libvirtd not started by the lab)"
        return 0
    fi
    disable_network_autostart
    start_daemon virtlogd
    start_daemon libvirtd
    local deadline=$((SECONDS + START_TIMEOUT)) t0=$SECONDS
    until libvirt_answers; do
        if ! live_pid libvirtd >/dev/null && ! pgrep -x libvirtd >/dev/null; then
            tail_log "$(log_file libvirtd)"
            die "libvirtd died before answering at $URI"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$(log_file libvirtd)"
            log "last virsh error: $(timeout 15 virsh -q -c "$URI" version 2>&1 >/dev/null | tail -n 3)"
            die "libvirt did not answer at $URI within ${START_TIMEOUT}s (VOLSNAP_LAB_START_TIMEOUT)"
        fi
        sleep 0.5
    done
    local net
    for net in $(virsh -q -c "$URI" net-list --name 2>/dev/null); do
        log "stopping libvirt network $net (the lab binds nothing)"
        virsh -q -c "$URI" net-destroy "$net" >/dev/null 2>&1 || true
    done
    log "libvirt answers at $URI ($((SECONDS - t0))s after launch)"
}

# ------------------------------------------------------------------------------------------ stop

# Destroy and undefine every volsnap-test-* domain; if libvirtd is unreachable, kill their QEMUs
# by the PIDs libvirt recorded.
remove_test_domains() {
    local dom pidf pid
    if libvirt_answers; then
        while IFS= read -r dom; do
            [[ $dom == "$DOMAIN_PREFIX"* ]] || continue
            log "removing leftover domain $dom"
            virsh -q -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
            virsh -q -c "$URI" undefine "$dom" --managed-save --snapshots-metadata --checkpoints-metadata \
                --nvram >/dev/null 2>&1 || virsh -q -c "$URI" undefine "$dom" >/dev/null 2>&1 || true
        done < <(virsh -q -c "$URI" list --all --name 2>/dev/null)
    else
        for pidf in /run/libvirt/qemu/"$DOMAIN_PREFIX"*.pid; do
            [[ -s $pidf ]] || continue
            pid=$(tr -dc '0-9' <"$pidf")
            if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
                log "libvirtd unreachable: killing QEMU pid $pid of $(basename "$pidf" .pid)"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    fi
}

stop_daemon() {
    local name=$1 pid waited=0
    clear_stale "$name"
    if ! pid=$(live_pid "$name"); then
        if pgrep -x "$name" >/dev/null; then
            log "$name is running but was not started by the lab: leaving it"
        else
            log "$name not running"
        fi
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= STOP_TIMEOUT * 10)); then
            log "$name did not exit within ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$(pid_file "$name")"
}

cmd_stop() {
    lock
    if command -v virsh >/dev/null; then
        remove_test_domains
    fi
    stop_daemon libvirtd
    stop_daemon virtlogd
}

# ------------------------------------------------------------------------------------------ status

cmd_status() {
    local name pid rc=1
    for name in virtlogd libvirtd; do
        if pid=$(live_pid "$name"); then
            printf '%-9s running (pid %s, started by the lab)\n' "$name" "$pid"
        elif [[ -e $(pid_file "$name") ]]; then
            printf '%-9s not running (stale pid file %s)\n' "$name" "$(pid_file "$name")"
        elif pid=$(pgrep -x "$name" | head -n 1) && [[ -n $pid ]]; then
            printf '%-9s running (pid %s, not started by the lab)\n' "$name" "$pid"
        else
            printf '%-9s not running\n' "$name"
        fi
    done
    if command -v virsh >/dev/null && libvirt_answers; then
        printf '%-9s answers at %s\n' libvirt "$URI"
        local doms
        doms=$(virsh -q -c "$URI" list --all --name 2>/dev/null | grep "^$DOMAIN_PREFIX" || true)
        printf '%-9s %s\n' domains "${doms:-none}" | tr '\n' ' '
        echo
        rc=0
    else
        printf '%-9s DOWN (no answer at %s)\n' libvirt "$URI"
    fi
    printf '%-9s %s\n' state "$LAB_DIR"
    return "$rc"
}

usage() {
    echo "usage: $0 {install|start|stop|status}" >&2
    exit 2
}

main() {
    (($# == 1)) || usage
    case $1 in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
