#!/usr/bin/env bash
# Local lab for volsnap.openstack integration tests, three parts:
#   libvirt    a real libvirtd + virtlogd driving QEMU (TCG)
#   ceph       a real single-node Ceph cluster (1 mon, 1 mgr, 1 memstore OSD, cephx)      (tests/lab/ceph.sh)
#   openstack  PostgreSQL, RabbitMQ, Keystone, Cinder (RBD on the lab Ceph), Glance     (tests/lab/openstack.sh)
#
#   tests/lab/lab.sh install [PART]        install what is missing (apt packages; the OpenStack venv)
#   tests/lab/lab.sh start [PART]          start (idempotent); 'openstack' implies 'ceph'
#   tests/lab/lab.sh stop [PART] [--purge] stop by recorded PID ('ceph' stops 'openstack' first);
#                                          --purge also deletes the part's state (cluster, databases)
#   tests/lab/lab.sh status [PART]         print the state; exit 0 only if the part(s) answer
#   tests/lab/lab.sh restart SERVICE       restart one openstack service and wait until it is ready:
#                                          cinder-volume, cinder-scheduler, cinder-api, glance (glance-api),
#                                          keystone (the lab inventory's restart commands use it)
#   tests/lab/lab.sh reset-config          render the openstack configuration from the templates again,
#                                          also over options a playbook set, restarting what changed
#
# PART is libvirt, ceph, openstack or all (the default). No systemd: every daemon is started by
# hand and its PID recorded under $VOLSNAP_LAB_DIR (default /var/tmp/volsnap-lab); everything
# listens on 127.0.0.1 or on UNIX sockets only. See tests/lab/README.md.
set -euo pipefail

LAB_DIR=${VOLSNAP_LAB_DIR:-/var/tmp/volsnap-lab}
LAB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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

LAB_LOCKED=0
lock() {
    ((LAB_LOCKED)) && return 0
    mkdir -p "$LAB_DIR"
    chmod 0755 "$LAB_DIR"
    exec 9>"$LAB_DIR/lock"
    flock -w "${VOLSNAP_LAB_LOCK_TIMEOUT:-900}" 9 || die "another lab.sh holds $LAB_DIR/lock"
    LAB_LOCKED=1
}

tail_log() {
    local file=$1
    if [[ -s $file ]]; then
        log "last lines of $file:"
        tail -n 30 "$file" >&2
    fi
}

# ------------------------------------------------------------------------------------------ services
# Daemons of the ceph and openstack parts run in the foreground of their own session (setsid), so
# their PID is also their process group. <lab dir>/run/<name>.pid holds "PID STARTTIME" (field 22
# of /proc/PID/stat): a PID reused by another program never passes for the service.

SVC_LAUNCHED=0 # services launched by this lab.sh run

svc_pid_file() { printf '%s/run/%s.pid' "$LAB_DIR" "$1"; }
svc_log_file() { printf '%s/log/%s.log' "$LAB_DIR" "$1"; }

proc_start_time() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -ra fields <<<"${stat##*) }"
    # fields[0] is field 3 (state); a zombie is as good as gone
    [[ ${fields[0]} != Z ]] || return 1
    printf '%s\n' "${fields[19]}"
}

# Print the PID of service $1 if the process recorded for it is alive; else nothing, status 1.
svc_pid() {
    local file pid start now
    file=$(svc_pid_file "$1")
    [[ -s $file ]] || return 1
    read -r pid start <"$file" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    now=$(proc_start_time "$pid") || return 1
    [[ $now == "$start" ]] || return 1
    printf '%s\n' "$pid"
}

svc_record() {
    local name=$1 pid=$2 start
    mkdir -p "$LAB_DIR/run"
    start=$(proc_start_time "$pid") || start=gone
    printf '%s %s\n' "$pid" "$start" >"$(svc_pid_file "$name")"
}

# svc_launch NAME COMMAND... : run COMMAND in its own session, output appended to the service log.
svc_launch() {
    local name=$1 logf
    shift
    logf=$(svc_log_file "$name")
    mkdir -p "$LAB_DIR/log" "$LAB_DIR/run"
    printf '==== %s: starting %s: %s\n' "$(date -u +%FT%TZ)" "$name" "$*" >>"$logf"
    setsid "$@" >>"$logf" 2>&1 </dev/null 9>&- &
    svc_record "$name" "$!"
    SVC_LAUNCHED=$((SVC_LAUNCHED + 1))
}

# svc_stop NAME [SIGNAL] [TIMEOUT]: signal the recorded process, wait for it, then end what is
# left of its process group (TERM, then KILL after TIMEOUT seconds). Idempotent.
svc_stop() {
    local name=$1 sig=${2:-TERM} timeout=${3:-$STOP_TIMEOUT} pid waited=0
    if ! pid=$(svc_pid "$name"); then
        [[ -e $(svc_pid_file "$name") ]] && rm -f "$(svc_pid_file "$name")"
        log "$name not running"
        return 0
    fi
    log "stopping $name (pid $pid, SIG$sig)"
    kill -"$sig" "$pid" 2>/dev/null || true
    while proc_start_time "$pid" >/dev/null; do
        if ((waited >= timeout * 10)); then
            log "$name did not exit within ${timeout}s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    # children left in the service's process group (uwsgi workers, oslo.service workers)
    if kill -0 -- "-$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$(svc_pid_file "$name")"
}

# Fail with the tail of the log of service $1 unless it is alive.
svc_require() {
    local name=$1
    svc_pid "$name" >/dev/null && return 0
    tail_log "$(svc_log_file "$name")"
    die "$name exited (log $(svc_log_file "$name"))"
}

svc_status_line() {
    local name=$1 pid
    if pid=$(svc_pid "$name"); then
        printf '%-16s running (pid %s)\n' "$name" "$pid"
        return 0
    fi
    printf '%-16s not running\n' "$name"
    return 1
}

# wait_for SECONDS WHAT SERVICE COMMAND...: poll COMMAND every 0.25 s; die with the log of SERVICE
# if SERVICE exits or SECONDS pass.
wait_for() {
    local secs=$1 what=$2 name=$3 deadline
    shift 3
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $name ]] && ! svc_pid "$name" >/dev/null; then
            tail_log "$(svc_log_file "$name")"
            die "$name exited while waiting for $what (log $(svc_log_file "$name"))"
        fi
        if ((SECONDS >= deadline)); then
            [[ -n $name ]] && tail_log "$(svc_log_file "$name")"
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.25
    done
}

# ------------------------------------------------------------------------------------------ install

# apt-get install the packages among "$@" that are not installed.
apt_install() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "all packages installed: $*"
        return 0
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q
    elif apt-get install -y -q "${missing[@]}" </dev/null; then
        return 0
    else
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get update -q
    fi
    apt-get install -y -q "${missing[@]}" </dev/null
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

libvirt_start() {
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

libvirt_stop() {
    lock
    if command -v virsh >/dev/null; then
        remove_test_domains
    fi
    stop_daemon libvirtd
    stop_daemon virtlogd
}

# ------------------------------------------------------------------------------------------ status

libvirt_status() {
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

libvirt_install() { apt_install "${PACKAGES[@]}"; }

# shellcheck source-path=SCRIPTDIR source=ceph.sh
source "$LAB_HERE/ceph.sh"
# shellcheck source-path=SCRIPTDIR source=openstack.sh
source "$LAB_HERE/openstack.sh"

usage() {
    echo "usage: $0 {install|start|status} [libvirt|ceph|openstack|all]" >&2
    echo "       $0 stop [libvirt|ceph|openstack|all] [--purge]" >&2
    echo "       $0 restart cinder-volume|cinder-scheduler|cinder-api|glance|glance-api|keystone" >&2
    echo "       $0 reset-config" >&2
    exit 2
}

main() {
    local cmd=${1:-} part=all purge=0 arg rc=0
    (($# >= 1)) || usage
    shift
    if [[ $cmd == restart ]]; then
        (($# == 1)) || usage
        openstack_restart "$1"
        return 0
    fi
    if [[ $cmd == reset-config ]]; then
        (($# == 0)) || usage
        openstack_reset_config
        return 0
    fi
    for arg in "$@"; do
        case $arg in
            libvirt | ceph | openstack | all) part=$arg ;;
            --purge) [[ $cmd == stop ]] || usage; purge=1 ;;
            *) usage ;;
        esac
    done
    case $cmd in
        install)
            lock
            case $part in
                libvirt) libvirt_install ;;
                ceph) ceph_install ;;
                openstack) ceph_install; openstack_install ;;
                all) libvirt_install; ceph_install; openstack_install ;;
            esac
            ;;
        start)
            lock
            case $part in
                libvirt) libvirt_start ;;
                ceph) ceph_start ;;
                openstack) ceph_start; openstack_start ;;
                all) libvirt_start; ceph_start; openstack_start ;;
            esac
            ;;
        stop)
            lock
            case $part in
                libvirt) libvirt_stop ;;
                ceph) openstack_stop "$purge"; ceph_stop "$purge" ;;
                openstack) openstack_stop "$purge" ;;
                all) openstack_stop "$purge"; ceph_stop "$purge"; libvirt_stop ;;
            esac
            ;;
        status)
            case $part in
                libvirt) libvirt_status || rc=1 ;;
                ceph) ceph_status || rc=1 ;;
                openstack) openstack_status || rc=1 ;;
                all)
                    libvirt_status || rc=1
                    ceph_status || rc=1
                    openstack_status || rc=1
                    ;;
            esac
            return "$rc"
            ;;
        *) usage ;;
    esac
}

main "$@"
