# shellcheck shell=bash
# OpenStack part of the lab, sourced by tests/lab/lab.sh (uses its log/die/svc_* helpers and the
# ceph part). Everything on 127.0.0.1, state under $LAB_DIR/openstack:
#
#   postgres     PostgreSQL 15 from a private data dir, port 5432       (databases keystone cinder glance)
#   epmd         Erlang port mapper on 127.0.0.1:4369
#   rabbitmq     RabbitMQ on 127.0.0.1:5672 (guest/guest, loopback only)
#   keystone     uwsgi, http://127.0.0.1:5000/v3
#   cinder-api   http://127.0.0.1:8776 (eventlet server of cinder-api)
#   cinder-scheduler, cinder-volume   backends 'ceph' (RBD driver, pool volumes, client.cinder) and
#                'nfs' (NfsDriver; the share is $LAB_DIR/nfs/export, bind-mounted where os-brick mounts it)
#   glance       uwsgi, http://127.0.0.1:9292 (stores rbd [default, pool images, client.glance], file)
#
# The services run from a Python 3.11 venv ($OS_DIR/venv) built from tests/lab/openstack/
# requirements.txt; a .pth adds a folder holding only symlinks to Debian's rados/rbd modules.
# `start` also writes $LAB_DIR/inventory.yml, an Ansible inventory of the lab for playbooks/*.yml.

OS_DIR=${LAB_DIR:?}/openstack
OS_VENV=$OS_DIR/venv
OS_ETC=$OS_DIR/etc
OS_STATE=$OS_DIR/state
OS_TEMPLATES=${LAB_HERE:?}/openstack
OS_REQS=$OS_TEMPLATES/requirements.txt
OS_STAMP=$OS_VENV/.volsnap-lab-requirements.sha256
OS_CLOUDS=$OS_DIR/clouds.yaml
OS_PACKAGES=(postgresql rabbitmq-server curl qemu-utils)
OS_START_TIMEOUT=${VOLSNAP_LAB_OPENSTACK_TIMEOUT:-180}
PG_PORT=5432
PG_DATA=$OS_DIR/postgres
PG_RUN=$OS_DIR/postgres-run
PG_BIN=
# lab credentials: loopback only, nothing secret
OS_ADMIN_PASSWORD="admin"
OS_SERVICE_PASSWORD=volsnap-lab-service
OS_DB_PASSWORD=volsnap-lab-db
OS_MEMBER_USER=demo
OS_MEMBER_PASSWORD=demo
OS_SVC_USER=volsnap-service
OS_CINDER_HOST=volsnap-lab
OS_SERVICES=(postgres epmd rabbitmq keystone cinder-api cinder-scheduler cinder-volume glance)
OS_ENDPOINTS=("keystone http://127.0.0.1:5000/v3" "cinder-api http://127.0.0.1:8776/" "glance http://127.0.0.1:9292/")
OS_READY=$OS_DIR/.ready
OS_CHANGED=()
OS_INVENTORY=$LAB_DIR/inventory.yml
# NFS backend: no NFS server here (no nfsd in the kernel). The export is a lab directory; os-brick's
# RemoteFsClient.mount() does nothing when the mount point it computes (nfs_mount_point_base/<md5 of
# the share string>) is already in /proc/mounts, so the export is bind-mounted there before
# cinder-volume starts, and NfsDriver works on it as on a mounted NFS share.
OS_NFS_DIR=$LAB_DIR/nfs
OS_NFS_EXPORT=$OS_NFS_DIR/export
OS_NFS_MOUNT_BASE=$OS_NFS_DIR/mnt
OS_NFS_SHARE=127.0.0.1:$OS_NFS_EXPORT
OS_NFS_MOUNT=$OS_NFS_MOUNT_BASE/$(printf '%s' "$OS_NFS_SHARE" | md5sum | cut -d' ' -f1)
# Options the operator playbooks (playbooks/*.yml through the lab inventory) set: when the rendered
# template and the file differ only in these, start leaves the file (and the service) alone.
OS_PLAYBOOK_OPTIONS_CINDER="*.nfs_snapshot_support *.nfs_qcow2_volumes *.nas_secure_file_operations *.enable_clone_optimization"
OS_PLAYBOOK_OPTIONS_GLANCE="DEFAULT.enabled_backends glance_store.default_backend *.rbd_store_pool *.rbd_store_user *.rbd_store_ceph_conf"

# ------------------------------------------------------------------------------------------ install

# A Python 3.11 that can build a venv: pyenv's newest 3.11.x, else /usr/bin/python3 if it is 3.11.
os_base_python() {
    local root cand best=""
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
    else
        root=${PYENV_ROOT:-$HOME/.pyenv}
    fi
    for cand in "$root"/versions/3.11.*/bin/python3; do
        [[ -x $cand ]] && best=$cand
    done
    if [[ -z $best ]] && [[ $(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2] == (3, 11))' 2>/dev/null) == True ]]; then
        /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
        best=/usr/bin/python3
    fi
    [[ -n $best ]] || die "no Python 3.11 found (pyenv $root/versions/3.11.* or /usr/bin/python3 3.11): Debian's rados/rbd modules need CPython 3.11"
    printf '%s\n' "$best"
}

os_want_stamp() {
    { sha256sum <"$OS_REQS"; "$1" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

# The .pth that exposes only Debian's rados and rbd modules (all of dist-packages would shadow pip's).
os_link_ceph_bindings() {
    local dir=$OS_VENV/ceph-bindings so site
    mkdir -p "$dir"
    for so in /usr/lib/python3/dist-packages/rados.cpython-311-x86_64-linux-gnu.so \
        /usr/lib/python3/dist-packages/rbd.cpython-311-x86_64-linux-gnu.so; do
        [[ -e $so ]] || die "$so missing (apt python3-rados python3-rbd)"
        ln -sfn "$so" "$dir/$(basename "$so")"
    done
    site=$("$OS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    printf '%s\n' "$dir" >"$site/volsnap-lab-ceph-bindings.pth"
}

os_venv_current() {
    [[ -x $OS_VENV/bin/python && -s $OS_STAMP && $(cat "$OS_STAMP") == "$(os_want_stamp "$(os_base_python)")" ]]
}

# mount.nfs (nfs-common): NfsDriver refuses to start without it. Its rpcbind dependency must not be
# started by the package scripts (it would listen on every address): without a policy-rc.d, one that
# denies every start is put in place for the installation.
os_install_nfs_client() {
    local policy=/usr/sbin/policy-rc.d added=0
    command -v mount.nfs >/dev/null 2>&1 || [[ -x /sbin/mount.nfs ]] && return 0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# volsnap lab: installing nfs-common starts no daemon\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        added=1
    fi
    apt_install nfs-common || { ((added)) && rm -f "$policy"; die "installing nfs-common failed"; }
    ((added)) && rm -f "$policy"
    return 0
}

openstack_install() {
    local py t0=$SECONDS
    apt_install "${OS_PACKAGES[@]}"
    os_install_nfs_client
    py=$(os_base_python)
    if os_venv_current; then
        log "openstack venv up to date ($OS_VENV)"
        os_link_ceph_bindings
        return 0
    fi
    lock
    log "openstack venv: installing $OS_REQS with $py into $OS_VENV (a few minutes)"
    rm -rf "$OS_VENV"
    mkdir -p "$OS_DIR"
    "$py" -m venv "$OS_VENV"
    # /etc/pip.conf may name local find-links folders that do not exist here: drop that noise
    "$OS_VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    "$OS_VENV/bin/python" -m pip install -q -r "$OS_REQS" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    os_link_ceph_bindings
    "$OS_VENV/bin/python" -W ignore -c 'import rados, rbd, openstack, keystone, cinder, glance, glance_store, psycopg2' ||
        die "the openstack venv cannot import its modules"
    os_want_stamp "$py" >"$OS_STAMP"
    # the databases were migrated by the old code: migrate again at the next start
    rm -f "$OS_DIR"/.dbsync-*
    log "openstack venv ready ($((SECONDS - t0))s)"
}

# ------------------------------------------------------------------------------------------ config

# os_ini_differs_only_in RENDERED CURRENT PATTERNS: exit 0 if the two INI files hold the same
# sections and values except options matching PATTERNS (space-separated SECTION.OPTION, * = any).
os_ini_differs_only_in() {
    python3 - "$@" <<'PY'
import configparser, fnmatch, sys

def load(path):
    ini = configparser.RawConfigParser(strict=False, delimiters=('=',), comment_prefixes=('#', ';'),
                                       empty_lines_in_values=False, default_section='\0none')
    ini.optionxform = str
    ini.read(path, encoding='utf-8')
    return {(s, o): v.strip() for s in ini.sections() for o, v in ini.items(s)}

rendered, current, patterns = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3].split()
for key in set(rendered) | set(current):
    if rendered.get(key) != current.get(key) and not any(fnmatch.fnmatchcase('.'.join(key), p) for p in patterns):
        sys.exit(1)
PY
}

# os_render TEMPLATE DEST [PLAYBOOK_OPTIONS]: fill in the @...@ values; DEST's service is restarted at
# start if it changed. If DEST differs from the template only in PLAYBOOK_OPTIONS (set there by an
# operator playbook run against the lab inventory), DEST is left as it is.
os_render() {
    local src=$1 dst=$2 owned=${3:-}
    sed -e "s|@ETC_DIR@|$OS_ETC|g" -e "s|@STATE_DIR@|$OS_STATE|g" -e "s|@VENV@|$OS_VENV|g" \
        -e "s|@CEPH_CONF@|$CEPH_CONF|g" -e "s|@DB_PASSWORD@|$OS_DB_PASSWORD|g" -e "s|@PG_PORT@|$PG_PORT|g" \
        -e "s|@SERVICE_PASSWORD@|$OS_SERVICE_PASSWORD|g" -e "s|@CINDER_HOST@|$OS_CINDER_HOST|g" \
        -e "s|@NFS_MOUNT_BASE@|$OS_NFS_MOUNT_BASE|g" -e "s|@NFS_SHARE@|$OS_NFS_SHARE|g" \
        "$src" >"$dst.tmp"
    if [[ -e $dst ]] && ! cmp -s "$dst.tmp" "$dst"; then
        if [[ -n $owned && -z ${OS_RESET_CONFIG:-} ]] && os_ini_differs_only_in "$dst.tmp" "$dst" "$owned"; then
            log "keeping $dst: it differs from the template only in options the operator playbooks set"
            rm -f "$dst.tmp"
            return 0
        fi
        OS_CHANGED+=("$dst")
    fi
    mv "$dst.tmp" "$dst"
}

# Restart (stop here, started again later) the running services whose configuration changed.
os_restart_changed() {
    local f
    for f in "${OS_CHANGED[@]}"; do
        case $f in
            */keystone/*) svc_pid keystone >/dev/null && { log "keystone: configuration changed"; svc_stop keystone; } ;;
            */glance/*) svc_pid glance >/dev/null && { log "glance: configuration changed"; svc_stop glance; } ;;
            */cinder/*)
                log "cinder: configuration changed"
                svc_stop cinder-api
                svc_stop cinder-scheduler
                svc_stop cinder-volume
                ;;
        esac
    done
    OS_CHANGED=()
}

os_write_config() {
    mkdir -p "$OS_ETC"/{keystone,cinder,glance} "$OS_STATE"/cinder/{locks,coordination} \
        "$OS_STATE"/glance/{images,staging,tasks,image-cache,locks}
    os_render "$OS_TEMPLATES/keystone.conf" "$OS_ETC/keystone/keystone.conf"
    os_render "$OS_TEMPLATES/keystone-uwsgi.ini" "$OS_ETC/keystone/uwsgi.ini"
    printf '%s\n' "$OS_NFS_SHARE" >"$OS_ETC/cinder/nfs_shares.tmp"
    if ! cmp -s "$OS_ETC/cinder/nfs_shares.tmp" "$OS_ETC/cinder/nfs_shares"; then
        [[ -e $OS_ETC/cinder/nfs_shares ]] && OS_CHANGED+=("$OS_ETC/cinder/nfs_shares")
        mv "$OS_ETC/cinder/nfs_shares.tmp" "$OS_ETC/cinder/nfs_shares"
    else
        rm -f "$OS_ETC/cinder/nfs_shares.tmp"
    fi
    os_render "$OS_TEMPLATES/cinder.conf" "$OS_ETC/cinder/cinder.conf" "$OS_PLAYBOOK_OPTIONS_CINDER"
    os_render "$OS_TEMPLATES/glance-api.conf" "$OS_ETC/glance/glance-api.conf" "$OS_PLAYBOOK_OPTIONS_GLANCE"
    os_render "$OS_TEMPLATES/glance-uwsgi.ini" "$OS_ETC/glance/uwsgi.ini"
    cp "$OS_VENV/etc/glance/glance-api-paste.ini" "$OS_ETC/glance/glance-api-paste.ini"
    chmod 0640 "$OS_ETC"/keystone/keystone.conf "$OS_ETC"/cinder/cinder.conf "$OS_ETC"/glance/glance-api.conf
    local auth="auth_url: http://127.0.0.1:5000/v3
      user_domain_name: Default
      project_domain_name: Default"
    cat >"$OS_CLOUDS.tmp" <<EOF
# volsnap lab clouds (written by tests/lab/openstack.sh)
clouds:
  volsnap-lab:
    auth:
      $auth
      username: admin
      password: $OS_ADMIN_PASSWORD
      project_name: admin
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    block_storage_api_version: 3
    image_api_version: 2
  volsnap-lab-member:
    auth:
      $auth
      username: $OS_MEMBER_USER
      password: $OS_MEMBER_PASSWORD
      project_name: demo
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    block_storage_api_version: 3
    image_api_version: 2
  volsnap-lab-service:
    auth:
      $auth
      username: $OS_SVC_USER
      password: $OS_SERVICE_PASSWORD
      project_name: service
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    block_storage_api_version: 3
    image_api_version: 2
EOF
    chmod 0644 "$OS_CLOUDS.tmp"
    mv "$OS_CLOUDS.tmp" "$OS_CLOUDS"
}

# The lab as an Ansible inventory for the operator playbooks (playbooks/*.yml): localhost in the groups
# ceph_mon, cinder_volume and glance_api, the roles' variables pointing at the lab's files, restarts
# through 'lab.sh restart'. Written atomically at every 'start openstack'; see tests/lab/README.md.
os_write_inventory() {
    local repo lab_sh py=$OS_VENV/bin/python tmp
    repo=$(cd "$LAB_HERE/../.." && pwd)
    lab_sh=$repo/tests/lab/lab.sh
    tmp=$(mktemp "$OS_INVENTORY.XXXXXX")
    cat >"$tmp" <<EOF
# Ansible inventory of the volsnap lab, written by tests/lab/openstack.sh ('lab.sh start openstack').
#   ansible-playbook -i $OS_INVENTORY volsnap.openstack.configure_nfs_snapshots --check --diff
# Playbooks that talk to OpenStack: OS_CLIENT_CONFIG_FILE=$OS_CLOUDS (volsnap_lab_environment),
# cloud volsnap_lab_cloud.
all:
  hosts:
    localhost:
      ansible_connection: local
      # the services' venv: openstacksdk, Cinder, and Debian's rados/rbd bindings
      ansible_python_interpreter: "$py"
  children:
    ceph_mon:
      hosts:
        localhost: {}
    cinder_volume:
      hosts:
        localhost: {}
    glance_api:
      hosts:
        localhost: {}
  vars:
    volsnap_lab_dir: "$LAB_DIR"
    volsnap_lab_sh: "$lab_sh"
    volsnap_lab_python: "$py"
    volsnap_lab_clouds_yaml: "$OS_CLOUDS"
    volsnap_lab_cloud: volsnap-lab
    volsnap_lab_member_cloud: volsnap-lab-member
    volsnap_lab_environment:
      OS_CLIENT_CONFIG_FILE: "$OS_CLOUDS"
    volsnap_lab_nfs_share: "$OS_NFS_SHARE"
    volsnap_lab_nfs_export: "$OS_NFS_EXPORT"
    volsnap_lab_nfs_mount: "$OS_NFS_MOUNT"

    # volsnap.openstack.cinder_nfs_snapshots (playbooks/configure_nfs_snapshots.yml): backend [nfs]
    cinder_nfs_snapshots_config_file: "$OS_ETC/cinder/cinder.conf"
    cinder_nfs_snapshots_restart_method: command
    cinder_nfs_snapshots_restart_command: ["bash", "$lab_sh", "restart", "cinder-volume"]
    cinder_nfs_snapshots_cinder_check: always
    cinder_nfs_snapshots_cinder_python: "$py"

    # volsnap.openstack.cinder_rbd_clone_optimization (playbooks/configure_rbd_clone_optimization.yml)
    cinder_rbd_clone_optimization_cinder_config_file: "$OS_ETC/cinder/cinder.conf"
    cinder_rbd_clone_optimization_glance_config_file: "$OS_ETC/glance/glance-api.conf"
    cinder_rbd_clone_optimization_glance_store: rbd
    cinder_rbd_clone_optimization_images_pool: images
    cinder_rbd_clone_optimization_glance_rbd_user: glance
    cinder_rbd_clone_optimization_glance_ceph_conf: "$CEPH_CONF"
    cinder_rbd_clone_optimization_restart_method: command
    cinder_rbd_clone_optimization_cinder_restart_command: ["bash", "$lab_sh", "restart", "cinder-volume"]
    cinder_rbd_clone_optimization_glance_restart_command: ["bash", "$lab_sh", "restart", "glance-api"]
    # the lab's keyring of client.cinder (ceph dir, root:root 0640 as tests/lab/ceph.sh writes it)
    cinder_rbd_clone_optimization_manage_keyring: true
    cinder_rbd_clone_optimization_keyring_owner: root
    cinder_rbd_clone_optimization_keyring_group: root
    cinder_rbd_clone_optimization_keyring_mode: "0640"
    cinder_rbd_clone_optimization_keyring_verify_user: root
    cinder_rbd_clone_optimization_glance_api_check: true
    cinder_rbd_clone_optimization_glance_api_url: http://127.0.0.1:9292
    cinder_rbd_clone_optimization_keystone:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: "$OS_ADMIN_PASSWORD"
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default

    # volsnap.openstack.ceph_client_keyrings (playbooks/ceph_keyrings.yml; also used by the role above)
    ceph_client_keyrings_ceph_conf: "$CEPH_CONF"
    ceph_client_keyrings_ceph_user: admin
    ceph_client_keyrings_admin_keyring: "$CEPH_DIR/ceph.client.admin.keyring"
    ceph_client_keyrings_dir: "$CEPH_DIR"
    ceph_client_keyrings_cluster: ceph
    ceph_client_keyrings_create_dir: false
    ceph_client_keyrings_client_conf: "$CEPH_CONF"
    # Debian's python3 has the rados module (python3-rados)
    ceph_client_keyrings_verify_python: /usr/bin/python3
    ceph_client_keyrings_restart_method: command
    ceph_client_keyrings_restart_command: ["bash", "$lab_sh", "restart", "{service}"]
    # the lab's users and caps exactly (tests/lab/ceph.sh); keyrings root:root 0640 in the ceph dir
    ceph_client_keyrings_clients:
      - name: cinder
        caps:
          mon: profile rbd
          osd: "$CEPH_CINDER_OSD_CAPS"
        keyrings:
          - hosts: [localhost]
            owner: root
            group: root
            mode: "0640"
            services: [cinder-volume]
        verify:
          write: [volumes, images]
      - name: glance
        caps:
          mon: profile rbd
          osd: "$CEPH_GLANCE_OSD_CAPS"
        keyrings:
          - hosts: [localhost]
            owner: root
            group: root
            mode: "0640"
            services: [glance-api]
        verify:
          write: [images]
          read: [volumes]
          deny_write: [volumes]
EOF
    chmod 0644 "$tmp"
    mv -f "$tmp" "$OS_INVENTORY"
}

# ------------------------------------------------------------------------------------------ postgres

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/postgres ]] && PG_BIN=$d
    done
    [[ -n $PG_BIN ]] || die "PostgreSQL not installed (apt postgresql): run 'bash tests/lab/lab.sh install'"
}

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

pg_psql() { as_postgres "$PG_BIN/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

pg_ready() { as_postgres "$PG_BIN/pg_isready" -q -h "$PG_RUN" -p "$PG_PORT" -U postgres; }

pg_start() {
    pg_bin
    mkdir -p "$PG_RUN"
    chown postgres:postgres "$PG_RUN"
    if [[ ! -s $PG_DATA/PG_VERSION ]]; then
        log "postgres: initdb $PG_DATA"
        rm -rf "$PG_DATA"
        mkdir -p "$PG_DATA"
        chown postgres:postgres "$PG_DATA"
        chmod 0700 "$PG_DATA"
        as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >>"$(svc_log_file postgres)" 2>&1 ||
            { tail_log "$(svc_log_file postgres)"; die "initdb failed"; }
        cat >>"$PG_DATA/postgresql.conf" <<EOF
# volsnap lab (tests/lab/openstack.sh)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    fi
    if ! svc_pid postgres >/dev/null; then
        port_open "$PG_PORT" && die "something else listens on 127.0.0.1:$PG_PORT (PostgreSQL not started by the lab)"
        rm -f "$PG_DATA/postmaster.pid"
        svc_launch postgres setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/postgres" -D "$PG_DATA"
    fi
    wait_for 60 "postgres to accept connections" postgres pg_ready
}

# pg_database NAME: role NAME (password $OS_DB_PASSWORD) owning database NAME
pg_database() {
    local name=$1
    if [[ $(pg_psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$name'") != 1 ]]; then
        pg_psql -c "CREATE ROLE $name LOGIN PASSWORD '$OS_DB_PASSWORD'"
    fi
    if [[ $(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'") != 1 ]]; then
        log "postgres: creating database $name"
        pg_psql -c "CREATE DATABASE $name OWNER $name"
    fi
}

pg_drop_database() {
    local name=$1
    log "postgres: dropping database $name"
    pg_psql -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"
    rm -f "$OS_DIR/.dbsync-$name"
}

# ------------------------------------------------------------------------------------------ rabbitmq

# env(1) command line that runs RabbitMQ tools on the lab node (127.0.0.1 only)
os_rabbit_env() {
    local d=$OS_DIR/rabbitmq
    OS_RABBIT_ENV=(env HOME="$d" RABBITMQ_NODENAME=volsnap-lab@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=4369
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq"
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_LOGS=-
        RABBITMQ_PID_FILE="$d/rabbitmq.pid" RUNNING_UNDER_SYSTEMD=true
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

rabbit_start() {
    local d=$OS_DIR/rabbitmq epmd
    mkdir -p "$d"/{mnesia,log}
    [[ -e $d/rabbitmq-env.conf ]] || : >"$d/rabbitmq-env.conf"
    printf '[].\n' >"$d/enabled_plugins"
    printf '[].\n' >"$d/advanced.config"
    cat >"$d/rabbitmq.conf" <<'EOF'
listeners.tcp.1 = 127.0.0.1:5672
loopback_users.guest = true
log.console = true
log.console.level = warning
log.file = false
EOF
    if [[ ! -s $d/.erlang.cookie ]]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/.erlang.cookie"
        chmod 0400 "$d/.erlang.cookie"
    fi
    epmd=$(command -v epmd || true)
    [[ -n $epmd ]] || epmd=$(compgen -G '/usr/lib/erlang/erts-*/bin/epmd' | tail -n 1)
    [[ -x $epmd ]] || die "epmd not found (apt rabbitmq-server installs erlang)"
    if ! svc_pid epmd >/dev/null; then
        port_open 4369 && die "something else listens on 127.0.0.1:4369 (epmd not started by the lab)"
        svc_launch epmd env ERL_EPMD_ADDRESS=127.0.0.1 "$epmd" -port 4369
        wait_for 20 "epmd on 127.0.0.1:4369" epmd port_open 4369
    fi
    if ! svc_pid rabbitmq >/dev/null; then
        port_open 5672 && die "something else listens on 127.0.0.1:5672 (RabbitMQ not started by the lab)"
        os_rabbit_env
        svc_launch rabbitmq "${OS_RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
    fi
}

# ------------------------------------------------------------------------------------------ services

http_answers() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" | grep -qE '^(2|3)[0-9][0-9]$'; }

os_py() { env OS_CLIENT_CONFIG_FILE="$OS_CLOUDS" VOLSNAP_LAB_SERVICE_PASSWORD="$OS_SERVICE_PASSWORD" \
    VOLSNAP_LAB_MEMBER_USER="$OS_MEMBER_USER" VOLSNAP_LAB_MEMBER_PASSWORD="$OS_MEMBER_PASSWORD" \
    VOLSNAP_LAB_SERVICE_USER="$OS_SVC_USER" \
    VOLSNAP_LAB_CINDER_HOST="$OS_CINDER_HOST@ceph" VOLSNAP_LAB_CINDER_NFS_HOST="$OS_CINDER_HOST@nfs" \
    "$OS_VENV/bin/python" "$@"; }

# os_dbsync NAME COMMAND...: run a schema migration once per venv (marker .dbsync-NAME)
os_dbsync() {
    local name=$1 logf
    shift
    [[ -e $OS_DIR/.dbsync-$name ]] && return 0
    logf=$(svc_log_file "$name-manage")
    log "$name: migrating the database"
    if ! "$@" >>"$logf" 2>&1; then
        tail_log "$logf"
        die "$name database migration failed (log $logf)"
    fi
    touch "$OS_DIR/.dbsync-$name"
}

keystone_start() {
    local km=("$OS_VENV/bin/keystone-manage" --config-file "$OS_ETC/keystone/keystone.conf")
    mkdir -p "$OS_ETC"/keystone/{fernet-keys,credential-keys}
    os_dbsync keystone "${km[@]}" db_sync
    if [[ ! -e $OS_ETC/keystone/fernet-keys/0 ]]; then
        "${km[@]}" fernet_setup --keystone-user root --keystone-group root >>"$(svc_log_file keystone-manage)" 2>&1
    fi
    if [[ ! -e $OS_ETC/keystone/credential-keys/0 ]]; then
        "${km[@]}" credential_setup --keystone-user root --keystone-group root >>"$(svc_log_file keystone-manage)" 2>&1
    fi
    if [[ ! -e $OS_DIR/.bootstrap-keystone ]]; then
        log "keystone: bootstrap (admin/admin, region RegionOne)"
        "${km[@]}" bootstrap --bootstrap-password "$OS_ADMIN_PASSWORD" --bootstrap-username admin \
            --bootstrap-project-name admin --bootstrap-role-name admin --bootstrap-service-name keystone \
            --bootstrap-region-id RegionOne --bootstrap-admin-url http://127.0.0.1:5000/v3 \
            --bootstrap-internal-url http://127.0.0.1:5000/v3 --bootstrap-public-url http://127.0.0.1:5000/v3 \
            >>"$(svc_log_file keystone-manage)" 2>&1 || { tail_log "$(svc_log_file keystone-manage)"; die "keystone bootstrap failed"; }
        touch "$OS_DIR/.bootstrap-keystone"
    fi
    svc_pid keystone >/dev/null || svc_launch keystone \
        env OS_KEYSTONE_CONFIG_DIR="$OS_ETC/keystone" "$OS_VENV/bin/uwsgi" --ini "$OS_ETC/keystone/uwsgi.ini"
}

# ------------------------------------------------------------------------------------------ nfs share

# the mount point is in /proc/mounts (what os-brick reads); /proc/mounts escapes blanks as \040
nfs_mounted() { awk -v m="$OS_NFS_MOUNT" '$2 == m {found = 1} END {exit !found}' /proc/mounts; }

# Bind-mount the export at the mount point NfsDriver computes (before cinder-volume starts). Idempotent.
nfs_mount() {
    mkdir -p "$OS_NFS_EXPORT" "$OS_NFS_MOUNT"
    chmod 0755 "$OS_NFS_DIR" "$OS_NFS_EXPORT"
    if nfs_mounted; then
        [[ $(stat -c '%d:%i' "$OS_NFS_MOUNT") == $(stat -c '%d:%i' "$OS_NFS_EXPORT") ]] && return 0
        die "$OS_NFS_MOUNT is a mount point but not of $OS_NFS_EXPORT: unmount it (umount $OS_NFS_MOUNT)"
    fi
    mount --bind "$OS_NFS_EXPORT" "$OS_NFS_MOUNT" || die "cannot bind-mount $OS_NFS_EXPORT on $OS_NFS_MOUNT"
    log "nfs: share $OS_NFS_SHARE bind-mounted on $OS_NFS_MOUNT"
}

# Undo nfs_mount (cinder-volume stopped first). Idempotent.
nfs_umount() {
    local tries=0
    while nfs_mounted; do
        if ((tries++ >= 20)); then
            log "nfs: $OS_NFS_MOUNT is still mounted (busy?): lazy unmount"
            umount -l "$OS_NFS_MOUNT" || die "cannot unmount $OS_NFS_MOUNT"
            break
        fi
        umount "$OS_NFS_MOUNT" 2>/dev/null || sleep 0.25
    done
    [[ -d $OS_NFS_MOUNT ]] && rmdir "$OS_NFS_MOUNT" 2>/dev/null
    return 0
}

cinder_launch() {
    svc_pid "$1" >/dev/null || svc_launch "$1" "$OS_VENV/bin/$1" --config-file "$OS_ETC/cinder/cinder.conf"
}

# the service $1 has logged $2 since its last launch
svc_logged_since_launch() {
    awk -v start="^==== .*: starting $1:" -v pat="$2" '$0 ~ start {seen = 0} index($0, pat) {seen = 1}
        END {exit !seen}' "$(svc_log_file "$1")"
}

# cinder-volume sends its capabilities to the scheduler once, at the end of its start-up; a
# scheduler that is not consuming yet misses them and places no volume until the next report
# (about a minute later). So: RabbitMQ up, then cinder-scheduler, then cinder-volume.
cinder_start_rpc_services() {
    if ! svc_pid cinder-scheduler >/dev/null; then
        cinder_launch cinder-scheduler
        svc_pid cinder-volume >/dev/null && return 0 # it reports again within a minute
    fi
    svc_pid cinder-volume >/dev/null && return 0
    wait_for "$OS_START_TIMEOUT" "cinder-scheduler to start its RPC server" cinder-scheduler \
        svc_logged_since_launch cinder-scheduler "Starting cinder-scheduler node"
    sleep 1
    nfs_mount
    cinder_launch cinder-volume
}

# Number of backends in cinder.conf's enabled_backends (one cinder-volume child process each).
cinder_backend_count() {
    python3 - "$OS_ETC/cinder/cinder.conf" <<'PY'
import configparser, sys
ini = configparser.RawConfigParser(strict=False, delimiters=('=',))
ini.read(sys.argv[1], encoding='utf-8')
print(len([b for b in ini.get('DEFAULT', 'enabled_backends', fallback='').split(',') if b.strip()]) or 1)
PY
}

# Exit 0 once every backend of the cinder-volume launched last logged the end of its start-up
# (capabilities published, RPC server up); exit 2 if a driver failed to initialise.
cinder_volume_ready() {
    local want=$1
    awk -v start="^==== .*: starting cinder-volume:" -v want="$want" '
        $0 ~ start {ok = 0; failed = 0}
        index($0, "Driver post RPC initialization completed successfully.") {ok++}
        index($0, "Failed to initialize driver.") {failed = 1}
        END {exit failed ? 2 : (ok >= want ? 0 : 1)}' "$(svc_log_file cinder-volume)"
}

wait_cinder_volume_ready() {
    local want rc deadline=$((SECONDS + OS_START_TIMEOUT))
    want=$(cinder_backend_count)
    while :; do
        rc=0
        cinder_volume_ready "$want" || rc=$?
        ((rc == 0)) && return 0
        if ((rc == 2)); then
            tail_log "$(svc_log_file cinder-volume)"
            die "a cinder-volume backend failed to initialise (log $(svc_log_file cinder-volume))"
        fi
        svc_require cinder-volume
        ((SECONDS < deadline)) || { tail_log "$(svc_log_file cinder-volume)"; die "cinder-volume not ready after ${OS_START_TIMEOUT}s"; }
        sleep 0.25
    done
}

glance_start() {
    svc_pid glance >/dev/null || svc_launch glance \
        env OS_GLANCE_CONFIG_DIR="$OS_ETC/glance" "$OS_VENV/bin/uwsgi" --ini "$OS_ETC/glance/uwsgi.ini"
}

# The databases of Cinder and Glance describe images of one Ceph cluster: if the cluster was
# recreated (new fsid), they are reset.
os_check_ceph_fsid() {
    local fsid old name
    fsid=$(ceph_fsid)
    old=$(cat "$OS_DIR/ceph-fsid" 2>/dev/null || true)
    if [[ -n $old && $old != "$fsid" ]]; then
        log "openstack: the Ceph cluster changed ($old -> $fsid): resetting the Cinder and Glance databases"
        for name in glance cinder-volume cinder-scheduler cinder-api; do
            svc_stop "$name"
        done
        pg_drop_database cinder
        pg_drop_database glance
        rm -rf "$OS_STATE"/glance/images "$OS_STATE"/cinder/coordination
        [[ -d $OS_NFS_EXPORT ]] && find "$OS_NFS_EXPORT" -mindepth 1 -delete
        rm -f "$OS_READY"
    fi
}

openstack_start() {
    local t0=$SECONDS name url setup_hash
    [[ -e $CEPH_READY ]] || die "the ceph part is not set up: bash tests/lab/lab.sh start ceph"
    if ! os_venv_current || [[ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] ||
        ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null ||
        ! command -v mount.nfs >/dev/null || ! command -v qemu-img >/dev/null; then
        openstack_install
    fi
    lock
    local launched_before=$SVC_LAUNCHED
    os_write_config
    os_restart_changed
    pg_start
    rabbit_start
    os_check_ceph_fsid
    ceph_fsid >"$OS_DIR/ceph-fsid"
    pg_database keystone
    pg_database cinder
    pg_database glance
    keystone_start
    os_dbsync cinder "$OS_VENV/bin/cinder-manage" --config-file "$OS_ETC/cinder/cinder.conf" db sync
    os_dbsync glance "$OS_VENV/bin/glance-manage" --config-dir "$OS_ETC/glance" db_sync
    # cinder-api and Glance need Keystone only when they serve requests: start them now, in
    # parallel with Keystone's and RabbitMQ's own start-up.
    cinder_launch cinder-api
    glance_start
    wait_for "$OS_START_TIMEOUT" "keystone at http://127.0.0.1:5000/v3" keystone http_answers http://127.0.0.1:5000/v3
    log "openstack: keystone answers (+$((SECONDS - t0))s)"
    setup_hash=$(cat "$OS_TEMPLATES/lab_setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
    if [[ ! -e $OS_READY || $(cat "$OS_READY") != "$setup_hash" ]]; then
        rm -f "$OS_READY"
        os_py "$OS_TEMPLATES/lab_setup.py" keystone >>"$(svc_log_file lab-setup)" 2>&1 ||
            { tail_log "$(svc_log_file lab-setup)"; die "creating the keystone users and catalog failed"; }
    fi
    wait_for "$OS_START_TIMEOUT" "RabbitMQ on 127.0.0.1:5672" rabbitmq port_open 5672
    log "openstack: rabbitmq answers (+$((SECONDS - t0))s)"
    nfs_mount
    cinder_start_rpc_services
    for name in "${OS_ENDPOINTS[@]}"; do
        url=${name#* }
        name=${name%% *}
        wait_for "$OS_START_TIMEOUT" "$name at $url" "$name" http_answers "$url"
    done
    log "openstack: APIs answer (+$((SECONDS - t0))s); waiting for cinder-volume and the glance stores"
    svc_require cinder-scheduler
    svc_require cinder-volume
    wait_cinder_volume_ready
    os_write_inventory
    if ((SVC_LAUNCHED == launched_before)) && [[ -e $OS_READY ]]; then
        log "openstack already running and ready ($((SECONDS - t0))s)"
        return 0
    fi
    if ! os_py "$OS_TEMPLATES/lab_setup.py" cinder glance >>"$(svc_log_file lab-setup)" 2>&1; then
        tail_log "$(svc_log_file cinder-volume)"
        tail_log "$(svc_log_file glance)"
        tail_log "$(svc_log_file lab-setup)"
        die "cinder or glance is not ready (logs under $LAB_DIR/log)"
    fi
    printf '%s\n' "$setup_hash" >"$OS_READY"
    log "openstack ready: clouds $OS_CLOUDS (volsnap-lab, volsnap-lab-member), python $OS_VENV/bin/python ($((SECONDS - t0))s)"
}

# lab.sh restart SERVICE: stop and start one running service of the openstack part (keeping the
# others up) and wait until it is ready. For hosts without a service manager: the lab inventory's
# restart commands of the roles call it.
openstack_restart() {
    local name=$1 t0=$SECONDS
    case $name in
        glance-api) name=glance ;;
        cinder-volume | cinder-scheduler | cinder-api | glance | keystone) ;;
        *) die "restart: unknown service '$name' (cinder-volume, cinder-scheduler, cinder-api, glance or glance-api, keystone)" ;;
    esac
    [[ -e $OS_READY ]] || die "the openstack part is not set up: bash tests/lab/lab.sh start openstack"
    lock
    svc_stop "$name"
    case $name in
        cinder-volume)
            nfs_mount
            cinder_launch cinder-volume
            wait_cinder_volume_ready
            ;;
        cinder-scheduler)
            cinder_launch cinder-scheduler
            wait_for "$OS_START_TIMEOUT" "cinder-scheduler to start its RPC server" cinder-scheduler \
                svc_logged_since_launch cinder-scheduler "Starting cinder-scheduler node"
            # a new scheduler knows no pool until cinder-volume reports again: make it report now
            sleep 1
            svc_stop cinder-volume
            nfs_mount
            cinder_launch cinder-volume
            wait_cinder_volume_ready
            ;;
        cinder-api)
            cinder_launch cinder-api
            wait_for "$OS_START_TIMEOUT" "cinder-api at http://127.0.0.1:8776/" cinder-api http_answers http://127.0.0.1:8776/
            ;;
        glance)
            glance_start
            wait_for "$OS_START_TIMEOUT" "glance at http://127.0.0.1:9292/" glance http_answers http://127.0.0.1:9292/
            ;;
        keystone)
            keystone_start
            wait_for "$OS_START_TIMEOUT" "keystone at http://127.0.0.1:5000/v3" keystone http_answers http://127.0.0.1:5000/v3
            ;;
    esac
    # cinder-volume: its log said every backend is up and published its capabilities (above)
    case $name in
        cinder-scheduler | cinder-api)
            os_py "$OS_TEMPLATES/lab_setup.py" cinder >>"$(svc_log_file lab-setup)" 2>&1 ||
                { tail_log "$(svc_log_file lab-setup)"; die "cinder is not ready after restarting $name"; } ;;
        glance)
            os_py "$OS_TEMPLATES/lab_setup.py" glance >>"$(svc_log_file lab-setup)" 2>&1 ||
                { tail_log "$(svc_log_file lab-setup)"; die "glance is not ready after restarting it"; } ;;
    esac
    log "$name restarted (pid $(svc_pid "$name"), $((SECONDS - t0))s)"
}

# lab.sh reset-config: render every configuration file from its template again, also over options an
# operator playbook changed, and restart (lab.sh restart) only the services whose file changed.
openstack_reset_config() {
    local f name restart=()
    [[ -e $OS_READY ]] || die "the openstack part is not set up: bash tests/lab/lab.sh start openstack"
    lock
    OS_RESET_CONFIG=1 os_write_config
    for f in "${OS_CHANGED[@]}"; do
        case $f in
            */cinder/*) restart+=(cinder-volume) ;;
            */glance/*) restart+=(glance) ;;
            */keystone/*) restart+=(keystone) ;;
        esac
    done
    OS_CHANGED=()
    if ((${#restart[@]} == 0)); then
        log "configuration as the templates have it: nothing to restart"
        return 0
    fi
    for name in $(printf '%s\n' "${restart[@]}" | sort -u); do
        log "$name: configuration reset to the template"
        openstack_restart "$name"
    done
}

openstack_stop() {
    local purge=${1:-0} name
    lock
    # the API services and Cinder's daemons in parallel, then what they depend on
    for name in glance cinder-volume cinder-scheduler cinder-api keystone; do
        svc_stop "$name" TERM 20 &
    done
    wait
    nfs_umount
    svc_stop rabbitmq TERM 30
    svc_stop epmd TERM 10
    svc_stop postgres INT 30 # fast shutdown: ends the open sessions
    if ((purge)); then
        log "openstack: purging databases, keys and state (the venv stays)"
        rm -rf "$PG_DATA" "$PG_RUN" "$OS_DIR/rabbitmq" "$OS_ETC" "$OS_STATE" "$OS_CLOUDS" "$OS_READY" \
            "$OS_DIR/ceph-fsid" "$OS_DIR"/.dbsync-* "$OS_DIR/.bootstrap-keystone" "$OS_NFS_DIR" "$OS_INVENTORY"
    fi
}

openstack_status() {
    local rc=0 name url
    for name in "${OS_SERVICES[@]}"; do
        svc_status_line "$name" || rc=1
    done
    for name in "${OS_ENDPOINTS[@]}"; do
        url=${name#* }
        name=${name%% *}
        if http_answers "$url"; then
            printf '%-16s answers at %s\n' "$name" "$url"
        else
            printf '%-16s DOWN (no answer at %s)\n' "$name" "$url"
            rc=1
        fi
    done
    if nfs_mounted; then
        printf '%-16s %s bind-mounted on %s\n' nfs-share "$OS_NFS_SHARE" "$OS_NFS_MOUNT"
    else
        printf '%-16s NOT MOUNTED (%s on %s)\n' nfs-share "$OS_NFS_SHARE" "$OS_NFS_MOUNT"
        rc=1
    fi
    if ((rc == 0)) && [[ -e $OS_READY && -s $OS_CLOUDS ]]; then
        printf '%-16s ready (clouds %s, python %s)\n' openstack "$OS_CLOUDS" "$OS_VENV/bin/python"
    else
        printf '%-16s NOT READY\n' openstack
        rc=1
    fi
    return "$rc"
}
