# shellcheck shell=bash
# Ceph part of the lab, sourced by tests/lab/lab.sh (uses its log/die/svc_* helpers).
#
# One monitor (a), one manager (x), one OSD (0, objectstore memstore), cephx everywhere, all on
# 127.0.0.1 and under $LAB_DIR/ceph: ceph.conf, ceph.client.{admin,cinder,glance}.keyring, the
# daemons' data (mon/, mgr/, osd/), logs (log/), admin sockets (run/). Pools 'volumes' and
# 'images' (rbd). Memstore keeps the objects in memory and saves them to osd/ on a clean stop.

CEPH_DIR=${LAB_DIR:?}/ceph
CEPH_CONF=$CEPH_DIR/ceph.conf
CEPH_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd uuid-runtime util-linux)
CEPH_MON_ADDR='[v2:127.0.0.1:3300,v1:127.0.0.1:6789]'
# capacity the memstore OSD reports; only data really written uses memory
CEPH_OSD_BYTES=${VOLSNAP_LAB_CEPH_OSD_BYTES:-17179869184}
CEPH_START_TIMEOUT=${VOLSNAP_LAB_CEPH_TIMEOUT:-120}
# seconds for the PGs of an existing cluster to become active before it is recreated
CEPH_PG_TIMEOUT=${VOLSNAP_LAB_CEPH_PG_TIMEOUT:-60}
CEPH_POOLS=(volumes images)
CEPH_READY=$CEPH_DIR/.ready

ceph_install() { apt_install "${CEPH_PACKAGES[@]}"; }

cephc() { timeout 60 ceph -c "$CEPH_CONF" --connect-timeout 15 "$@"; }

ceph_write_conf() {
    local fsid=$1
    cat >"$CEPH_CONF.tmp" <<EOF
# volsnap lab cluster, written by tests/lab/ceph.sh
[global]
fsid = $fsid
mon initial members = a
mon host = $CEPH_MON_ADDR
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
run dir = $CEPH_DIR/run
crash dir = $CEPH_DIR/crash
mon cluster log file = $CEPH_DIR/log/cluster.log

[client]
keyring = $CEPH_DIR/\$cluster.\$name.keyring
log file = $CEPH_DIR/log/client.log
log to stderr = false
err to stderr = true

[mon]
mon data = $CEPH_DIR/mon/\$cluster-\$id
public addr = 127.0.0.1
log file = $CEPH_DIR/log/\$cluster-\$name.log
pid file = $CEPH_DIR/run/\$cluster-\$name.pid

[mgr]
mgr data = $CEPH_DIR/mgr/\$cluster-\$id
public addr = 127.0.0.1
log file = $CEPH_DIR/log/\$cluster-\$name.log
pid file = $CEPH_DIR/run/\$cluster-\$name.pid
mgr initial modules = iostat

[osd]
osd data = $CEPH_DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $CEPH_OSD_BYTES
public addr = 127.0.0.1
cluster addr = 127.0.0.1
log file = $CEPH_DIR/log/\$cluster-\$name.log
pid file = $CEPH_DIR/run/\$cluster-\$name.pid
osd crush update on start = true
# a full shutdown unmounts the store: memstore then saves its objects under osd data
osd fast shutdown = false
EOF
    mv "$CEPH_CONF.tmp" "$CEPH_CONF"
    chmod 0644 "$CEPH_CONF"
}

# Create the cluster from nothing: conf, mon. and client.admin keys, monmap, mon store.
ceph_bootstrap() {
    local fsid
    log "ceph: creating a new cluster in $CEPH_DIR"
    rm -rf "$CEPH_DIR"
    mkdir -p "$CEPH_DIR"/{mon,mgr,osd,run,log,crash}
    chmod 0755 "$CEPH_DIR"
    fsid=$(uuidgen)
    ceph_write_conf "$fsid"
    {
        ceph-authtool "$CEPH_DIR/ceph.mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *'
        ceph-authtool "$CEPH_DIR/ceph.client.admin.keyring" --create-keyring --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *'
        ceph-authtool "$CEPH_DIR/ceph.mon.keyring" --import-keyring "$CEPH_DIR/ceph.client.admin.keyring"
    } >>"$CEPH_DIR/log/mkfs.log"
    chmod 0600 "$CEPH_DIR/ceph.mon.keyring" "$CEPH_DIR/ceph.client.admin.keyring"
    monmaptool --create --addv a "$CEPH_MON_ADDR" --fsid "$fsid" "$CEPH_DIR/monmap" >>"$CEPH_DIR/log/mkfs.log"
    mkdir -p "$CEPH_DIR/mon/ceph-a"
    ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/ceph.mon.keyring" \
        >>"$CEPH_DIR/log/mkfs.log" 2>&1 || { tail_log "$CEPH_DIR/log/mkfs.log"; die "ceph-mon --mkfs failed"; }
    [[ -e $CEPH_DIR/mon/ceph-a/store.db ]] || die "ceph-mon --mkfs left no store in $CEPH_DIR/mon/ceph-a"
}

ceph_answers() { timeout 10 ceph -c "$CEPH_CONF" --connect-timeout 5 mon stat >/dev/null 2>&1; }

# osd.0 runs, reports itself active on its admin socket, and the monitor has it up and in.
ceph_osd_up() {
    local n
    svc_pid ceph-osd >/dev/null || return 1
    timeout 10 ceph --admin-daemon "$CEPH_DIR/run/ceph-osd.0.asok" status 2>/dev/null |
        grep -q '"state": "active"' || return 1
    n=$(cephc osd dump --format json 2>/dev/null | python3 -c \
        'import json,sys; print(sum(1 for o in json.load(sys.stdin)["osds"] if o["up"] and o["in"]))') || return 1
    ((n >= 1))
}

ceph_pgs_active() {
    python3 -c '
import json, subprocess, sys
out = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout
st = json.loads(out)
pgs = st.get("pg_summary", st).get("num_pg_by_state", [])
total = sum(s["num"] for s in pgs)
active = sum(s["num"] for s in pgs if s["name"].startswith("active"))
sys.exit(0 if total and total == active else 1)
' timeout 20 ceph -c "$CEPH_CONF" --connect-timeout 5 pg stat --format json
}

ceph_start_mon() {
    svc_pid ceph-mon >/dev/null && return 0
    svc_launch ceph-mon ceph-mon -f -c "$CEPH_CONF" -i a
}

ceph_start_mgr() {
    svc_pid ceph-mgr >/dev/null && return 0
    if [[ ! -s $CEPH_DIR/mgr/ceph-x/keyring ]]; then
        mkdir -p "$CEPH_DIR/mgr/ceph-x"
        cephc auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
            -o "$CEPH_DIR/mgr/ceph-x/keyring"
    fi
    svc_launch ceph-mgr ceph-mgr -f -c "$CEPH_CONF" -i x
}

ceph_create_osd() {
    local uuid id
    # a half-made OSD of an interrupted bootstrap
    for id in $(cephc osd ls); do
        cephc osd purge "$id" --yes-i-really-mean-it >/dev/null 2>&1
    done
    uuid=$(uuidgen)
    id=$(cephc osd new "$uuid" 0)
    [[ $id == 0 ]] || die "ceph osd new gave id '$id', expected 0 (purge the lab: lab.sh stop ceph --purge)"
    rm -rf "$CEPH_DIR/osd/ceph-0"
    mkdir -p "$CEPH_DIR/osd/ceph-0"
    ceph-osd -c "$CEPH_CONF" -i 0 --no-mon-config --mkfs --osd-uuid "$uuid" --mkkey >>"$CEPH_DIR/log/mkfs.log" 2>&1 ||
        { tail_log "$CEPH_DIR/log/mkfs.log"; die "ceph-osd --mkfs failed"; }
    cephc auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
        -i "$CEPH_DIR/osd/ceph-0/keyring" >/dev/null 2>&1
}

ceph_start_osd() {
    svc_pid ceph-osd >/dev/null && return 0
    [[ -s $CEPH_DIR/osd/ceph-0/keyring ]] || ceph_create_osd
    # after a crash the monitor may still have osd.0 up (and its PGs active) for many minutes
    cephc osd down 0 >/dev/null 2>&1 || true
    svc_launch ceph-osd ceph-osd -f -c "$CEPH_CONF" -i 0
}

# ceph_user NAME CAPS...: client.NAME with exactly these caps, keyring ceph.client.NAME.keyring (0640)
ceph_user() {
    local name=$1 keyring
    shift
    keyring=$CEPH_DIR/ceph.client.$name.keyring
    if cephc auth get "client.$name" >/dev/null 2>&1; then
        cephc auth caps "client.$name" "$@" >/dev/null 2>&1
    else
        cephc auth get-or-create "client.$name" "$@" >/dev/null
    fi
    cephc auth get "client.$name" -o "$keyring.tmp" >/dev/null 2>&1
    chmod 0640 "$keyring.tmp"
    mv "$keyring.tmp" "$keyring"
}

ceph_setup() {
    local existing pool
    existing=$(cephc osd pool ls)
    for pool in "${CEPH_POOLS[@]}"; do
        if ! grep -qx "$pool" <<<"$existing"; then
            log "ceph: creating pool $pool"
            cephc osd pool create "$pool" 8 8 >/dev/null 2>&1
            rbd -c "$CEPH_CONF" pool init "$pool"
        fi
    done
    ceph_users
    touch "$CEPH_READY"
}

# The service users and their caps, as a deployment with the clone optimization has them: Glance
# (like Nova) reads the volumes pool, because images cloned from volumes have their parent there.
CEPH_CINDER_OSD_CAPS='profile rbd pool=volumes, profile rbd pool=images'
CEPH_GLANCE_OSD_CAPS='profile rbd pool=images, profile rbd-read-only pool=volumes'
ceph_users() {
    ceph_user cinder mon 'profile rbd' osd "$CEPH_CINDER_OSD_CAPS"
    ceph_user glance mon 'profile rbd' osd "$CEPH_GLANCE_OSD_CAPS"
}

# Caps as above? (a cluster created by an older lab.sh, or changed by a test, is brought back)
ceph_users_current() {
    cephc auth get client.cinder 2>/dev/null | grep -qF "caps osd = \"$CEPH_CINDER_OSD_CAPS\"" &&
        cephc auth get client.glance 2>/dev/null | grep -qF "caps osd = \"$CEPH_GLANCE_OSD_CAPS\""
}

# Start mon, mgr, osd and wait until every PG is active. Returns 1 (does not die) when the OSD
# does not come up or its PGs stay inactive, so the caller can recreate the cluster.
ceph_bring_up() {
    ceph_start_mon
    wait_for "$CEPH_START_TIMEOUT" "the ceph monitor to answer" ceph-mon ceph_answers
    ceph_start_mgr
    ceph_start_osd
    wait_for_osd || return 1
    # The OSD has loaded the state memstore saved at the last clean stop. Retire that state, so
    # that after a crash or kill the OSD finds none (and the cluster is recreated) instead of
    # coming back with objects older than what Cinder and Glance recorded since.
    if [[ -e $CEPH_DIR/osd/ceph-0/collections ]]; then
        mv -f "$CEPH_DIR/osd/ceph-0/collections" "$CEPH_DIR/osd/ceph-0/collections.loaded"
    fi
    if [[ ! -e $CEPH_READY ]] || ! cephc auth get client.glance >/dev/null 2>&1; then
        ceph_setup
    elif ! ceph_users_current; then
        ceph_users
    fi
    local deadline=$((SECONDS + CEPH_PG_TIMEOUT))
    until ceph_pgs_active; do
        svc_require ceph-osd
        if ((SECONDS >= deadline)); then
            log "ceph: placement groups not active after ${CEPH_PG_TIMEOUT}s: $(cephc pg stat 2>&1 | head -c 300)"
            return 1
        fi
        sleep 0.25
    done
    svc_require ceph-mgr
}

ceph_start() {
    local t0=$SECONDS b
    for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rbd rados uuidgen setsid; do
        command -v "$b" >/dev/null || ceph_install
    done
    lock
    if ! svc_pid ceph-mon >/dev/null && ! svc_pid ceph-osd >/dev/null &&
        { [[ ! -e $CEPH_READY || ! -s $CEPH_CONF || ! -e $CEPH_DIR/mon/ceph-a/store.db ||
            ! -s $CEPH_DIR/osd/ceph-0/keyring ]]; }; then
        ceph_bootstrap
    fi
    # An OSD whose memstore was not saved (killed, machine restarted) comes back empty: its PGs
    # are lost. Start over with a new cluster then (the openstack part notices the new fsid).
    if ! ceph_bring_up; then
        log "ceph: the cluster did not come back from its saved state: creating a new one (data lost)"
        svc_stop ceph-osd TERM 10
        svc_stop ceph-mgr TERM 10
        svc_stop ceph-mon TERM 10
        ceph_bootstrap
        ceph_bring_up || { tail_log "$(svc_log_file ceph-osd)"; die "ceph did not become ready"; }
    fi
    log "ceph ready: fsid $(ceph_fsid), conf $CEPH_CONF ($((SECONDS - t0))s)"
}

# Wait for osd.0; return 1 (not die) if it exits or stays down, so the caller can recreate it.
wait_for_osd() {
    local deadline=$((SECONDS + CEPH_START_TIMEOUT))
    until ceph_osd_up; do
        if ! svc_pid ceph-osd >/dev/null; then
            tail_log "$(svc_log_file ceph-osd)"
            return 1
        fi
        ((SECONDS < deadline)) || { tail_log "$(svc_log_file ceph-osd)"; return 1; }
        sleep 0.25
    done
}

ceph_fsid() { sed -n 's/^fsid = //p' "$CEPH_CONF" 2>/dev/null; }

ceph_stop() {
    local purge=${1:-0}
    lock
    # the OSD saves its memstore on a clean shutdown: give it time
    svc_stop ceph-osd TERM 120
    svc_stop ceph-mgr TERM 20
    svc_stop ceph-mon TERM 20
    if ((purge)); then
        log "ceph: purging $CEPH_DIR"
        rm -rf "$CEPH_DIR"
    fi
}

ceph_status() {
    local rc=0 name
    for name in ceph-mon ceph-mgr ceph-osd; do
        svc_status_line "$name" || rc=1
    done
    if [[ -s $CEPH_CONF ]] && ceph_answers; then
        printf '%-16s %s\n' ceph "$(cephc health 2>&1 | head -n 1)"
        if ((rc == 0)) && ceph_osd_up && ceph_pgs_active && [[ -e $CEPH_READY ]]; then
            printf '%-16s ready (fsid %s, conf %s)\n' ceph "$(ceph_fsid)" "$CEPH_CONF"
        else
            printf '%-16s NOT READY\n' ceph
            rc=1
        fi
    else
        printf '%-16s DOWN (no monitor answers)\n' ceph
        rc=1
    fi
    return "$rc"
}
