"""Create the lab's OpenStack resources (idempotent); run by tests/lab/openstack.sh with the venv python.

    lab_setup.py STEP...    STEP: keystone, cinder, glance

    keystone   service project + users, demo project + member user, catalog
    cinder     volume types 'ceph' and 'nfs'; wait for cinder-volume <host>@ceph and <host>@nfs to be up
               and their pools known to the scheduler
    glance     wait until /v2/info/stores/detail lists the rbd and file stores

Reads the clouds.yaml named by OS_CLIENT_CONFIG_FILE (written by openstack.sh before).
"""

from __future__ import annotations

import os
import sys
import time

import openstack
from openstack.connection import Connection

REGION = "RegionOne"
SERVICE_PASSWORD = os.environ["VOLSNAP_LAB_SERVICE_PASSWORD"]
MEMBER_USER = os.environ.get("VOLSNAP_LAB_MEMBER_USER", "demo")
MEMBER_PASSWORD = os.environ.get("VOLSNAP_LAB_MEMBER_PASSWORD", "demo")
CINDER_HOST = os.environ["VOLSNAP_LAB_CINDER_HOST"]
CINDER_NFS_HOST = os.environ.get("VOLSNAP_LAB_CINDER_NFS_HOST", CINDER_HOST.rpartition("@")[0] + "@nfs")
# volume type -> (backend name, cinder-volume host, description)
VOLUME_TYPES = {
    "ceph": ("ceph", CINDER_HOST, "RBD on the volsnap lab Ceph (pool volumes)"),
    "nfs": ("nfs", CINDER_NFS_HOST, "NfsDriver on the volsnap lab share (a bind-mounted lab directory)"),
}
# a user like the ones Cinder and Nova use towards Glance (roles admin + service in project
# service): Glance's location API (POST /v2/images/{id}/locations) takes rbd:// URLs only from
# callers with the service role
SERVICE_USER = os.environ.get("VOLSNAP_LAB_SERVICE_USER", "volsnap-service")

CATALOG = [
    # (service name, type, url)
    ("cinder", "block-storage", "http://127.0.0.1:8776/v3/%(project_id)s"),
    ("cinderv3", "volumev3", "http://127.0.0.1:8776/v3/%(project_id)s"),
    ("glance", "image", "http://127.0.0.1:9292"),
]


def connect() -> Connection:
    return openstack.connect(cloud="volsnap-lab")


def ensure_role(conn: Connection, name: str):
    return conn.identity.find_role(name) or conn.identity.create_role(name=name)


def ensure_project(conn: Connection, name: str, description: str):
    domain = conn.identity.find_domain("default")
    return conn.identity.find_project(name, domain_id=domain.id) or conn.identity.create_project(
        name=name, domain_id=domain.id, description=description)


def ensure_user(conn: Connection, name: str, password: str, project) -> object:
    domain = conn.identity.find_domain("default")
    user = conn.identity.find_user(name, domain_id=domain.id)
    if user is None:
        user = conn.identity.create_user(name=name, password=password, domain_id=domain.id,
                                         default_project_id=project.id)
    else:
        conn.identity.update_user(user, password=password)
    return user


def grant(conn: Connection, user, project, role_name: str) -> None:
    role = ensure_role(conn, role_name)
    conn.identity.assign_project_role_to_user(project, user, role)


def setup_keystone() -> None:
    conn = connect()
    service_project = ensure_project(conn, "service", "OpenStack services of the volsnap lab")
    for name in ("cinder", "glance", SERVICE_USER):
        user = ensure_user(conn, name, SERVICE_PASSWORD, service_project)
        grant(conn, user, service_project, "admin")
        grant(conn, user, service_project, "service")
    demo = ensure_project(conn, "demo", "non-admin project of the volsnap lab")
    member = ensure_user(conn, MEMBER_USER, MEMBER_PASSWORD, demo)
    grant(conn, member, demo, "member")
    for name, stype, url in CATALOG:
        service = next((s for s in conn.identity.services() if s.type == stype), None)
        if service is None:
            service = conn.identity.create_service(name=name, type=stype, description=f"{name} ({stype})")
        existing = {e.interface: e for e in conn.identity.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            ep = existing.get(interface)
            if ep is None:
                conn.identity.create_endpoint(service_id=service.id, interface=interface, url=url,
                                              region_id=REGION)
            elif ep.url != url:
                conn.identity.update_endpoint(ep, url=url)


def wait(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # keep polling; report the last error
            last = err
        time.sleep(0.5)
    sys.exit(f"lab_setup: timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))


def setup_cinder() -> None:
    conn = connect()
    for name, (backend, _host, description) in VOLUME_TYPES.items():
        vtype = conn.block_storage.find_type(name)
        if vtype is None:
            conn.block_storage.create_type(name=name, extra_specs={"volume_backend_name": backend},
                                           description=description)
        elif (vtype.extra_specs or {}).get("volume_backend_name") != backend:
            conn.block_storage.update_type_extra_specs(vtype, volume_backend_name=backend)
    hosts = [host for _backend, host, _description in VOLUME_TYPES.values()]

    def volume_services_up() -> bool:
        services = {s.host: s for s in conn.block_storage.services(binary="cinder-volume")}
        sched = [s for s in conn.block_storage.services(binary="cinder-scheduler") if s.state == "up"]
        return bool(sched) and all(host in services and services[host].state == "up"
                                   and services[host].status == "enabled" for host in hosts)

    wait(f"cinder-volume {' and '.join(hosts)} and cinder-scheduler to be up", volume_services_up)
    wanted = {f"{host}#{backend}" for backend, host, _description in VOLUME_TYPES.values()}

    def pools_reported() -> bool:
        return wanted <= {p.name for p in conn.block_storage.backend_pools()}

    wait(f"the scheduler to know pools {', '.join(sorted(wanted))}", pools_reported)


def setup_glance() -> None:
    conn = connect()

    def stores_ok() -> bool:
        resp = conn.image.get("/info/stores/detail")
        if resp.status_code != 200:
            raise RuntimeError(f"GET /v2/info/stores/detail: {resp.status_code} {resp.text[:200]}")
        ids = {s["id"] for s in resp.json().get("stores", [])}
        return {"rbd", "file"} <= ids

    wait("Glance stores rbd and file", stores_ok)


def main() -> None:
    steps = {"keystone": setup_keystone, "cinder": setup_cinder, "glance": setup_glance}
    if len(sys.argv) < 2 or any(arg not in steps for arg in sys.argv[1:]):
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(steps)}}}...")
    for arg in sys.argv[1:]:
        steps[arg]()


if __name__ == "__main__":
    main()
