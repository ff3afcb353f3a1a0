#!/usr/bin/env bash
# Test hosts for role scenarios (molecule): each host is a network namespace with its own veth on a
# private bridge, its own overlay copy of a Debian rootfs, its own mount/UTS/PID namespaces and its
# own sshd on port 22, reached over real ssh through `ip netns exec <ns> socat`.
#
#   tests/hosts/hosts.sh build-rootfs
#       debootstrap (minbase) the shared read-only rootfs once; rebuilt when its package list changes
#   tests/hosts/hosts.sh start <scenario> <n> [--names a,b,c] [--forward PORTS] [--user NAME]
#       start n hosts (idempotent: a running, healthy scenario with the same hosts is kept)
#   tests/hosts/hosts.sh forward <scenario> PORTS
#       make the root namespace's 127.0.0.1:<port> reachable as 127.0.0.1:<port> inside every host
#   tests/hosts/hosts.sh ceph-ports [CEPH_CONF]
#       the 127.0.0.1 ports of a Ceph cluster's monitors and OSDs (default: the lab's cluster)
#   --forward-ceph [CEPH_CONF] (start and forward): forward the ports ceph-ports prints
#   tests/hosts/hosts.sh stop <scenario>|--all
#       kill every process of the scenario's namespaces (by PID), delete namespaces, veths and state
#   tests/hosts/hosts.sh status [<scenario>]
#       one line per host; exit 0 only when every host of the scenario(s) answers over ssh
#   tests/hosts/hosts.sh ssh <scenario> <host> [command...]
#       ssh into a host (as the scenario's user) with the generated ssh config
#   tests/hosts/hosts.sh paths <scenario>
#       print the generated files (ssh config, inventory, molecule instance config, key)
#
# PORTS: comma or space separated list of ports and ranges, e.g. "3300,6789,6800-6803".
# State lives under $VOLSNAP_HOSTS_DIR (default /var/tmp/volsnap-hosts); see tests/hosts/README.md.
set -euo pipefail

HOSTS_DIR=${VOLSNAP_HOSTS_DIR:-/var/tmp/volsnap-hosts}
ROOTFS=$HOSTS_DIR/rootfs
SCEN_DIR=$HOSTS_DIR/scenarios
SUITE=${VOLSNAP_HOSTS_SUITE:-bookworm}
SSH_WAIT=${VOLSNAP_HOSTS_SSH_WAIT:-30}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
# Bump when the rootfs customisation below changes in a way that needs a rebuild.
ROOTFS_LAYOUT=4
ROOTFS_PACKAGES=(python3 openssh-server socat ceph-common python3-rados python3-rbd qemu-utils sudo tini procps iproute2)
MACHINE_PACKAGES=(debootstrap socat iproute2 openssh-client util-linux)
DEFAULT_USER=volsnap
SUBNET_PREFIX=10.233
LAB_CEPH_CONF=${VOLSNAP_LAB_DIR:-/var/tmp/volsnap-lab}/ceph/ceph.conf

log() { printf 'hosts: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts, debootstrap)"; }

ensure_machine_packages() {
    local missing=() pkg
    for pkg in "${MACHINE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "apt-get install ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

# The Debian mirror the machine itself uses (so debootstrap reaches what apt reaches).
debian_mirror() {
    if [[ -n ${VOLSNAP_HOSTS_MIRROR:-} ]]; then printf '%s\n' "$VOLSNAP_HOSTS_MIRROR"; return; fi
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v -- '-security' | head -n1 || true)
    [[ -n $uri ]] || uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list 2>/dev/null \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -v -- '-security' | head -n1 || true)
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

rootfs_id() {
    printf 'suite=%s layout=%s packages=%s\n' "$SUITE" "$ROOTFS_LAYOUT" \
        "$(printf '%s\n' "${ROOTFS_PACKAGES[@]}" | sort -u | paste -sd, -)"
}

rootfs_current() { [[ -f $ROOTFS/.volsnap-rootfs-id && $(cat "$ROOTFS/.volsnap-rootfs-id") == "$(rootfs_id)" ]]; }

running_scenarios() {
    local d
    for d in "$SCEN_DIR"/*/; do
        [[ -f $d/index ]] || continue
        basename "$d"
    done
}

# Settings baked into the rootfs: host keys are generated per host at start, sshd only takes keys.
customise_rootfs() {
    local root=$1
    rm -f "$root"/etc/ssh/ssh_host_*
    mkdir -p "$root/etc/ssh/sshd_config.d"
    cat >"$root/etc/ssh/sshd_config.d/volsnap.conf" <<'EOF'
# volsnap test host (tests/hosts/hosts.sh)
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PidFile /run/sshd.pid
MaxStartups 100:30:200
MaxSessions 100
ClientAliveInterval 15
EOF
    chroot "$root" /usr/sbin/useradd --create-home --shell /bin/bash --comment 'volsnap test user' "$DEFAULT_USER"
    # no password, but not locked ('!' would make sshd refuse the key with UsePAM no)
    chroot "$root" /usr/sbin/usermod -p '*' "$DEFAULT_USER"
    chroot "$root" /usr/sbin/usermod -p '*' root
    printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$DEFAULT_USER" >"$root/etc/sudoers.d/volsnap"
    chmod 0440 "$root/etc/sudoers.d/volsnap"
    # No network inside the hosts: apt lists would only be stale weight.
    chroot "$root" /usr/bin/apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    printf 'volsnap-host\n' >"$root/etc/hostname"
}

cmd_build_rootfs() {
    need_root
    mkdir -p "$HOSTS_DIR"
    # the lock is held only while building: fd 8 is closed before returning, so that no host or
    # forwarder started afterwards by this process inherits it
    exec 8>"$HOSTS_DIR/.rootfs.lock"
    flock 8
    if rootfs_current; then
        exec 8>&-
        log "rootfs up to date ($ROOTFS)"
        return 0
    fi
    build_rootfs_locked
    exec 8>&-
}


build_rootfs_locked() {
    local running
    running=$(running_scenarios)
    [[ -z $running ]] || die "the rootfs must be rebuilt (package list changed) but scenarios still use it: $(
        echo "$running" | paste -sd' ' -); run '$0 stop --all' first"
    ensure_machine_packages
    local mirror tmp start=$SECONDS
    mirror=$(debian_mirror)
    tmp=$HOSTS_DIR/rootfs.building
    rm -rf "$tmp"
    log "debootstrap --variant=minbase $SUITE from $mirror (packages: ${ROOTFS_PACKAGES[*]})"
    if ! debootstrap --variant=minbase --include="$(printf '%s\n' "${ROOTFS_PACKAGES[@]}" | paste -sd, -)" \
        "$SUITE" "$tmp" "$mirror" >"$HOSTS_DIR/debootstrap.log" 2>&1; then
        tail -n 30 "$HOSTS_DIR/debootstrap.log" >&2
        die "debootstrap failed; full log in $HOSTS_DIR/debootstrap.log"
    fi
    customise_rootfs "$tmp"
    rootfs_id >"$tmp/.volsnap-rootfs-id"
    rm -rf "$ROOTFS"
    mv "$tmp" "$ROOTFS"
    log "rootfs built in $((SECONDS - start))s: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
}

# The 127.0.0.1 ports a Ceph client talks to: every monitor's and every OSD's public addresses.
cmd_ceph_ports() {
    local conf=${1:-$LAB_CEPH_CONF} mons osds
    [[ -r $conf ]] || die "no Ceph configuration at $conf (is the lab's Ceph running? bash tests/lab/lab.sh start ceph)"
    mons=$(timeout 60 ceph -c "$conf" --connect-timeout 15 mon dump -f json 2>/dev/null) \
        || die "ceph -c $conf mon dump failed: is the cluster up?"
    osds=$(timeout 60 ceph -c "$conf" --connect-timeout 15 osd dump -f json 2>/dev/null) \
        || die "ceph -c $conf osd dump failed: is the cluster up?"
    printf '%s\n%s\n' "$mons" "$osds" | python3 -c '
import json, sys
ports = set()
for line in sys.stdin:
    if not line.strip():
        continue
    data = json.loads(line)
    for item in data.get("mons", []) + data.get("osds", []):
        for addr in item.get("public_addrs", {}).get("addrvec", []):
            host, _, port = addr.get("addr", "").rpartition(":")
            if host == "127.0.0.1" and port.isdigit() and port != "0":
                ports.add(int(port))
if not ports:
    sys.exit("no 127.0.0.1 monitor or OSD address found")
print(",".join(str(p) for p in sorted(ports)))
'
}

valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$ ]]; }

scenario_dir() { printf '%s/%s' "$SCEN_DIR" "$1"; }

# Network namespace names: vsh<index> is the scenario's switch (bridge br0), vsh<index>-<i> host i.
switch_ns() { printf 'vsh%s' "$1"; }
host_ns() { printf 'vsh%s-%s' "$1" "$2"; }
host_ip() { printf '%s.%s.%s' "$SUBNET_PREFIX" "$1" "$((10 + $2))"; }

# Expand "3300,6789 6800-6803" into one port per line.
expand_ports() {
    local spec=$1 item lo hi p
    for item in ${spec//,/ }; do
        if [[ $item =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
            ((lo <= hi && hi - lo <= 200)) || die "bad port range $item"
            for ((p = lo; p <= hi; p++)); do echo "$p"; done
        elif [[ $item =~ ^[0-9]+$ ]]; then
            echo "$item"
        else
            die "bad port '$item' (expected numbers or ranges such as 6800-6803)"
        fi
    done | awk '$1 > 0 && $1 < 65536' | sort -un
}

# PID of process $1 if it is alive and its command line contains $2.
pid_alive_with() {
    local pid=$1 needle=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}

host_init_pid() {
    # The PID-namespace init of a host, seen from the root namespace: the child of its unshare.
    local h=$1 upid
    upid=$(cat "$h/unshare.pid" 2>/dev/null) || return 1
    pid_alive_with "$upid" unshare || return 1
    awk '{print $1}' "/proc/$upid/task/$upid/children" 2>/dev/null
}

ssh_host() {
    local dir=$1 name=$2
    shift 2
    ssh -F "$dir/ssh_config" -o BatchMode=yes -o ConnectTimeout=5 "$name" "$@"
}

host_answers() { ssh_host "$1" "$2" true </dev/null >/dev/null 2>&1; }

# Runs inside the host's new mount/UTS/PID namespaces (PID 1 there), in the host's network namespace.
cmd_init() {
    local dir=$1 name=$2 h root
    h=$dir/hosts/$name
    root=$h/root
    mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$h/upper,workdir=$h/work" "$root"
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
    mount -t tmpfs -o mode=0755,nosuid,size=64m tmpfs "$root/dev"
    local node
    for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r n ma mi <<<"$node"
        mknod -m 0666 "$root/dev/$n" c "$ma" "$mi"
    done
    mkdir -p "$root/dev/pts" "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
    ln -s pts/ptmx "$root/dev/ptmx"
    ln -s /proc/self/fd "$root/dev/fd"
    ln -s /proc/self/fd/0 "$root/dev/stdin"
    ln -s /proc/self/fd/1 "$root/dev/stdout"
    ln -s /proc/self/fd/2 "$root/dev/stderr"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
    mount -t tmpfs -o mode=0755,nosuid,nodev,size=64m tmpfs "$root/run"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
    mkdir -p "$root/run/sshd" "$root/run/lock"
    hostname "$name"
    printf '%s\n' "$name" >"$root/etc/hostname"
    cp "$dir/etc_hosts" "$root/etc/hosts"
    install -m 0600 "$h/ssh_host_ed25519_key" "$root/etc/ssh/ssh_host_ed25519_key"
    install -m 0644 "$h/ssh_host_ed25519_key.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
    local user home uid gid
    user=$(cat "$dir/user")
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$dir/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    if [[ $user != root ]]; then
        home=$(chroot "$root" getent passwd "$user" | cut -d: -f6)
        uid=$(chroot "$root" id -u "$user")
        gid=$(chroot "$root" id -g "$user")
        install -d -m 0700 -o "$uid" -g "$gid" "$root$home/.ssh"
        install -m 0600 -o "$uid" -g "$gid" "$dir/id_ed25519.pub" "$root$home/.ssh/authorized_keys"
    fi
    exec chroot "$root" /usr/bin/tini -- /usr/sbin/sshd -D -e
}

write_files() {
    local dir=$1 idx=$2 user=$3
    shift 3
    local names=("$@") i name ns
    {
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
        for i in "${!names[@]}"; do printf '%s\t%s\n' "$(host_ip "$idx" "$((i + 1))")" "${names[$i]}"; done
    } >"$dir/etc_hosts"
    : >"$dir/known_hosts"
    {
        printf '# generated by tests/hosts/hosts.sh for scenario %s\n' "$(basename "$dir")"
        for i in "${!names[@]}"; do
            name=${names[$i]}
            ns=$(host_ns "$idx" "$((i + 1))")
            printf 'Host %s\n' "$name"
            printf '  HostName %s\n  Port 22\n  User %s\n' "$(host_ip "$idx" "$((i + 1))")" "$user"
            printf '  HostKeyAlias %s\n' "$name"
            printf '  IdentityFile %s/id_ed25519\n  IdentitiesOnly yes\n' "$dir"
            printf '  UserKnownHostsFile %s/known_hosts\n  StrictHostKeyChecking yes\n' "$dir"
            printf '  ProxyCommand ip netns exec %s socat - TCP:%%h:%%p\n' "$ns"
            printf '  ServerAliveInterval 5\n  ServerAliveCountMax 3\n  LogLevel ERROR\n'
            printf '%s %s\n' "$name" "$(cut -d' ' -f1-2 "$dir/hosts/$name/ssh_host_ed25519_key.pub")" \
                >>"$dir/known_hosts"
        done
    } >"$dir/ssh_config"
    {
        printf '# molecule instance config (default driver), generated by tests/hosts/hosts.sh\n'
        for name in "${names[@]}"; do
            printf -- '- instance: %s\n  address: %s\n  user: %s\n  port: 22\n  identity_file: %s/id_ed25519\n' \
                "$name" "$name" "$user" "$dir"
        done
    } >"$dir/instance_config.yml"
    {
        printf '# Ansible inventory, generated by tests/hosts/hosts.sh\nall:\n  vars:\n'
        printf '    ansible_user: %s\n' "$user"
        printf '    ansible_ssh_private_key_file: %s/id_ed25519\n' "$dir"
        printf '    ansible_ssh_common_args: -F %s/ssh_config\n' "$dir"
        printf '    ansible_python_interpreter: /usr/bin/python3\n'
        printf '  hosts:\n'
        for name in "${names[@]}"; do printf '    %s:\n      ansible_host: %s\n' "$name" "$name"; done
    } >"$dir/inventory.yml"
}

allocate_index() {
    local used i
    used=$(cat "$SCEN_DIR"/*/index 2>/dev/null || true)
    for ((i = 1; i <= 250; i++)); do
        if ! grep -qx "$i" <<<"$used"; then
            # a namespace of a crashed run that was never cleaned up also blocks the index
            ip netns list 2>/dev/null | awk '{print $1}' | grep -qE "^vsh$i(-|$)" && continue
            echo "$i"
            return 0
        fi
    done
    die "no free scenario index (250 scenarios running?)"
}

start_forwarders() {
    local dir=$1 spec=$2 port name i ns idx sock
    idx=$(cat "$dir/index")
    mkdir -p "$dir/fwd"
    mapfile -t names <"$dir/names"
    for port in $(expand_ports "$spec"); do
        sock=$dir/fwd/$port.sock
        if ! pid_alive_with "$(cat "$dir/fwd/$port.pid" 2>/dev/null || true)" "$sock"; then
            rm -f "$sock"
            setsid socat "UNIX-LISTEN:$sock,fork,mode=0600" "TCP:127.0.0.1:$port" \
                </dev/null >>"$dir/fwd/$port.log" 2>&1 &
            echo $! >"$dir/fwd/$port.pid"
            for _try in $(seq 1 50); do [[ -S $sock ]] && break; sleep 0.02; done
            [[ -S $sock ]] || die "forwarder for port $port did not create $sock"
        fi
        for i in "${!names[@]}"; do
            ns=$(host_ns "$idx" "$((i + 1))")
            name=${names[$i]}
            if pid_alive_with "$(cat "$dir/fwd/$port.$name.pid" 2>/dev/null || true)" "TCP-LISTEN:$port,"; then
                continue
            fi
            setsid ip netns exec "$ns" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$sock" \
                </dev/null >>"$dir/fwd/$port.$name.log" 2>&1 &
            echo $! >"$dir/fwd/$port.$name.pid"
        done
        echo "$port" >>"$dir/fwd/ports"
    done
    sort -un -o "$dir/fwd/ports" "$dir/fwd/ports"
    # wait until every listener accepts
    for port in $(expand_ports "$spec"); do
        for i in "${!names[@]}"; do
            ns=$(host_ns "$idx" "$((i + 1))")
            for _try in $(seq 1 100); do
                ip netns exec "$ns" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
                sleep 0.02
            done
            ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q . || die "port $port not listening in $ns"
        done
    done
    log "forwarding 127.0.0.1:{$(paste -sd, "$dir/fwd/ports")} into the hosts of $(basename "$dir")"
}

cmd_forward() {
    need_root
    local scenario=${1:?usage: forward <scenario> PORTS|--ceph [CEPH_CONF]} spec=${2:?usage: forward <scenario> PORTS} dir
    if [[ $spec == --ceph ]]; then spec=$(cmd_ceph_ports "${3:-}"); fi
    dir=$(scenario_dir "$scenario")
    [[ -f $dir/index ]] || die "scenario $scenario is not running"
    start_forwarders "$dir" "$spec"
}

scenario_healthy() {
    local dir=$1 name
    [[ -f $dir/index && -f $dir/names ]] || return 1
    while read -r name; do
        host_init_pid "$dir/hosts/$name" >/dev/null || return 1
        host_answers "$dir" "$name" || return 1
    done <"$dir/names"
}

cmd_start() {
    need_root
    local scenario=${1:-} count=${2:-}
    [[ -n $scenario && -n $count ]] || die "usage: start <scenario> <n> [--names a,b,c] [--forward PORTS] [--user NAME]"
    shift 2
    valid_name "$scenario" || die "scenario name '$scenario' must match [A-Za-z0-9][A-Za-z0-9_-]{0,39}"
    if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 50)); then
        die "host count must be 1..50, got '$count'"
    fi
    local names_csv='' forward='' user=$DEFAULT_USER
    while (($#)); do
        case $1 in
            --names) names_csv=${2:?--names needs a value}; shift 2 ;;
            --forward) forward="$forward,${2:?--forward needs a value}"; shift 2 ;;
            --forward-ceph)
                if [[ -n ${2:-} && $2 != --* ]]; then
                    forward="$forward,$(cmd_ceph_ports "$2")"; shift 2
                else
                    forward="$forward,$(cmd_ceph_ports)"; shift
                fi ;;
            --user) user=${2:?--user needs a value}; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    local names=() i
    if [[ -n $names_csv ]]; then
        IFS=, read -r -a names <<<"$names_csv"
        ((${#names[@]} == count)) || die "--names lists ${#names[@]} names but n is $count"
    else
        for ((i = 1; i <= count; i++)); do names+=("host$i"); done
    fi
    for i in "${names[@]}"; do
        [[ $i =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || die "host name '$i' is not a valid hostname"
    done
    [[ $(printf '%s\n' "${names[@]}" | sort -u | wc -l) -eq $count ]] || die "host names must be unique"
    [[ $user =~ ^(root|$DEFAULT_USER)$ ]] || die "--user must be root or $DEFAULT_USER"

    cmd_build_rootfs
    local dir start=$SECONDS
    dir=$(scenario_dir "$scenario")
    if [[ -f $dir/index && -f $dir/names && $(paste -sd, "$dir/names") == "$(IFS=,; echo "${names[*]}")" \
        && $(cat "$dir/user" 2>/dev/null) == "$user" ]] && scenario_healthy "$dir"; then
        log "scenario $scenario already running (${names[*]})"
        [[ -z ${forward//,/} ]] || start_forwarders "$dir" "$forward"
        print_paths "$dir"
        return 0
    fi
    [[ ! -e $dir ]] || cmd_stop "$scenario"

    local idx sw
    exec 7>"$HOSTS_DIR/.index.lock"
    flock 7
    idx=$(allocate_index)
    mkdir -p "$dir/hosts"
    echo "$idx" >"$dir/index"
    exec 7>&-
    printf '%s\n' "${names[@]}" >"$dir/names"
    echo "$user" >"$dir/user"
    ssh-keygen -q -t ed25519 -N '' -C "volsnap-hosts-$scenario" -f "$dir/id_ed25519"

    sw=$(switch_ns "$idx")
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" addr add "$SUBNET_PREFIX.$idx.1/24" dev br0
    ip -n "$sw" link set br0 up
    local name ns h
    for i in "${!names[@]}"; do
        name=${names[$i]}
        ns=$(host_ns "$idx" "$((i + 1))")
        h=$dir/hosts/$name
        mkdir -p "$h/upper" "$h/work" "$h/root"
        ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$h/ssh_host_ed25519_key"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$sw" link add "h$((i + 1))" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "h$((i + 1))" master br0 up
        ip -n "$ns" addr add "$(host_ip "$idx" "$((i + 1))")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    write_files "$dir" "$idx" "$user" "${names[@]}"
    for i in "${!names[@]}"; do
        name=${names[$i]}
        ns=$(host_ns "$idx" "$((i + 1))")
        h=$dir/hosts/$name
        setsid ip netns exec "$ns" unshare --mount --uts --pid --fork --kill-child --propagation private \
            -- bash "$SELF" _init "$dir" "$name" </dev/null >"$h/console.log" 2>&1 &
        echo $! >"$h/unshare.pid"
    done
    for name in "${names[@]}"; do
        local ok=0 t0=$SECONDS
        while ((SECONDS - t0 < SSH_WAIT)); do
            if host_answers "$dir" "$name"; then ok=1; break; fi
            host_init_pid "$dir/hosts/$name" >/dev/null || sleep 0.2
            sleep 0.1
        done
        if ((ok == 0)); then
            tail -n 20 "$dir/hosts/$name/console.log" >&2 || true
            die "host $name of scenario $scenario does not answer over ssh after ${SSH_WAIT}s (console: $dir/hosts/$name/console.log)"
        fi
    done
    [[ -z ${forward//,/} ]] || start_forwarders "$dir" "$forward"
    log "scenario $scenario: ${#names[@]} hosts up in $((SECONDS - start))s (${names[*]}, $SUBNET_PREFIX.$idx.0/24)"
    print_paths "$dir"
}

print_paths() {
    local dir=$1
    printf 'ssh_config=%s/ssh_config\ninventory=%s/inventory.yml\ninstance_config=%s/instance_config.yml\nkey=%s/id_ed25519\n' \
        "$dir" "$dir" "$dir" "$dir"
}

cmd_paths() {
    local dir
    dir=$(scenario_dir "${1:?usage: paths <scenario>}")
    [[ -f $dir/index ]] || die "scenario $1 is not running"
    print_paths "$dir"
}

kill_pids() {
    local pid
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

stop_one() {
    local scenario=$1 dir idx name i ns pids f
    dir=$(scenario_dir "$scenario")
    [[ -d $dir ]] || { log "scenario $scenario is not running"; return 0; }
    idx=$(cat "$dir/index" 2>/dev/null || true)
    if [[ -f $dir/names ]]; then
        mapfile -t names <"$dir/names"
    else
        names=()
    fi
    # sshd first (clean TCP close for ssh ControlPersist masters), then the namespace's init: killing
    # PID 1 of a PID namespace kills everything in it. unshare --fork ignores SIGTERM: SIGKILL it.
    for i in "${!names[@]}"; do
        name=${names[$i]}
        local ipid
        ipid=$(host_init_pid "$dir/hosts/$name" || true)
        if [[ -n $ipid ]]; then
            pkill -TERM -P "$ipid" -x sshd 2>/dev/null || true
        fi
    done
    sleep 0.1
    for i in "${!names[@]}"; do
        name=${names[$i]}
        local ipid upid
        ipid=$(host_init_pid "$dir/hosts/$name" || true)
        upid=$(cat "$dir/hosts/$name/unshare.pid" 2>/dev/null || true)
        [[ -z $ipid ]] || kill_pids "$ipid"
        pid_alive_with "$upid" unshare && kill_pids "$upid"
    done
    # root-namespace ends of the port forwarders
    for f in "$dir"/fwd/*.pid; do
        [[ -e $f ]] || continue
        local pid
        pid=$(cat "$f")
        pid_alive_with "$pid" "$dir/fwd/" && kill_pids "$pid"
    done
    if [[ -n $idx ]]; then
        # whatever is left in the namespaces: forwarders, ProxyCommand socats of ssh clients
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^vsh$idx(-[0-9]+)?$" || true); do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [[ -z $pids ]] || kill_pids $pids
        done
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^vsh$idx(-[0-9]+)?$" || true); do
            local _t
            for _t in $(seq 1 50); do
                [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
                sleep 0.05
            done
            ip netns del "$ns" 2>/dev/null || log "could not delete netns $ns"
        done
    fi
    # mounts lived only in the hosts' own mount namespaces; make sure none leaked into ours
    if grep -qF " $dir/" /proc/self/mounts; then
        grep -F " $dir/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
    fi
    rm -rf "$dir"
    log "scenario $scenario stopped"
}

cmd_stop() {
    need_root
    local target=${1:?usage: stop <scenario>|--all} s
    if [[ $target == --all ]]; then
        for s in $(running_scenarios); do stop_one "$s"; done
        # namespaces of scenarios whose state is gone
        for s in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^vsh[0-9]+(-[0-9]+)?$' || true); do
            local pids
            pids=$(ip netns pids "$s" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [[ -z $pids ]] || kill_pids $pids
            ip netns del "$s" 2>/dev/null || true
        done
        return 0
    fi
    valid_name "$target" || die "bad scenario name '$target'"
    stop_one "$target"
}

cmd_status() {
    local scenarios s rc=0 dir name idx ipid state
    if [[ -n ${1:-} ]]; then scenarios=$1; else scenarios=$(running_scenarios); fi
    if rootfs_current; then echo "rootfs: $ROOTFS (current)"; else echo "rootfs: missing or outdated"; fi
    [[ -n $scenarios ]] || { echo "no scenario running"; return 0; }
    for s in $scenarios; do
        dir=$(scenario_dir "$s")
        if [[ ! -f $dir/index ]]; then echo "$s: not running"; rc=1; continue; fi
        idx=$(cat "$dir/index")
        local fwd=''
        [[ -f $dir/fwd/ports ]] && fwd=" forwarded ports: $(paste -sd, "$dir/fwd/ports")"
        echo "$s: $SUBNET_PREFIX.$idx.0/24 user $(cat "$dir/user")$fwd"
        local i=0
        while read -r name; do
            i=$((i + 1))
            ipid=$(host_init_pid "$dir/hosts/$name" || true)
            if [[ -z $ipid ]]; then
                state=down rc=1
            elif host_answers "$dir" "$name"; then
                state="up (init pid $ipid)"
            else
                state="no ssh (init pid $ipid)" rc=1
            fi
            printf '  %-16s %-15s netns %-10s %s\n' "$name" "$(host_ip "$idx" "$i")" "$(host_ns "$idx" "$i")" "$state"
        done <"$dir/names"
    done
    return "$rc"
}

cmd_ssh() {
    local dir
    dir=$(scenario_dir "${1:?usage: ssh <scenario> <host> [command...]}")
    local name=${2:?usage: ssh <scenario> <host> [command...]}
    shift 2
    [[ -f $dir/ssh_config ]] || die "scenario $(basename "$dir") is not running"
    exec ssh -F "$dir/ssh_config" "$name" "$@"
}

main() {
    local cmd=${1:-help}
    shift || true
    case $cmd in
        build-rootfs) cmd_build_rootfs "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        forward) cmd_forward "$@" ;;
        ceph-ports) cmd_ceph_ports "$@" ;;
        ssh) cmd_ssh "$@" ;;
        paths) cmd_paths "$@" ;;
        _init) cmd_init "$@" ;;
        help | -h | --help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$SELF" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (try: $0 help)" ;;
    esac
}

main "$@"
