# Stand-in for an OpenStack service that uses a cephx client (cinder-volume, glance-api) in the
# ceph_client_keyrings and cinder_rbd_clone_optimization molecule scenarios.
#
# Like the real services it runs as its service user and connects to the cluster once at start with
# its client's keyring (librados through python3-rados), then waits for SIGTERM. Every start appends
# "start pid=<pid> client=<name> connected=yes|no caps_ok=..." to <state dir>/<service>.log, so the
# scenario can count restarts and see that the running process could use its keyring. A client of
# "-" only records the start (a service whose Ceph access is not under test).
#
#   python3 ceph_standin.py <service> <client id> <keyring> <ceph.conf> <state dir> [<pool to write>...]
import os
import signal
import sys
import time


def probe(service, client, keyring, conf, pools):
    if client == '-':
        return 'skipped', ''
    try:
        import rados
    except ImportError as exc:
        return 'no error=%s' % type(exc).__name__, ''
    try:
        cluster = rados.Rados(conffile=conf, rados_id=client,
                              conf={'keyring': keyring, 'log_file': '', 'admin_socket': ''})
        cluster.connect(timeout=20)
    except Exception as exc:  # any failure to connect is what the log must show
        return 'no error=%s' % type(exc).__name__, ''
    written = []
    try:
        for pool in pools:
            try:
                ioctx = cluster.open_ioctx(pool)
                name = 'volsnap-standin.%s.%d' % (service, os.getpid())
                ioctx.write_full(name, b'standin')
                ioctx.remove_object(name)
                ioctx.close()
                written.append('%s:yes' % pool)
            except Exception as exc:  # a refused write is reported, not fatal
                written.append('%s:%s' % (pool, type(exc).__name__))
    finally:
        cluster.shutdown()
    return 'yes', ','.join(written)


def main(argv):
    service, client, keyring, conf, state = argv[1:6]
    connected, writes = probe(service, client, keyring, conf, argv[6:])
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with open(os.path.join(state, '%s.log' % service), 'a') as log:
        log.write('start pid=%d client=%s connected=%s writes=%s time=%.3f\n'
                  % (os.getpid(), client, connected, writes, time.time()))
    while True:
        signal.pause()


if __name__ == '__main__':
    sys.exit(main(sys.argv))
