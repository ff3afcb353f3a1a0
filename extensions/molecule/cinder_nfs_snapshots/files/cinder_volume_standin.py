# Stand-in for cinder-volume in the cinder_nfs_snapshots molecule scenario.
#
# Like cinder-volume it runs as the cinder user and reads cinder.conf once at start; it then waits
# for SIGTERM. Every start appends "start pid=<pid> conf_sha256=<sha256 of the bytes read>" to
# /var/lib/cinder-standin/starts.log, so the scenario can count restarts and check that the running
# process read the final configuration. Exits 1 when it cannot read the configuration.
import hashlib
import os
import signal
import sys
import time

CONF = sys.argv[1] if len(sys.argv) > 1 else '/etc/cinder/cinder.conf'
LOG = '/var/lib/cinder-standin/starts.log'


def main():
    try:
        with open(CONF, 'rb') as handle:
            data = handle.read()
    except OSError as exc:
        sys.stderr.write('cinder-volume-standin: cannot read %s: %s\n' % (CONF, exc))
        return 1
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with open(LOG, 'a') as log:
        digest = hashlib.sha256(data).hexdigest()
        log.write('start pid=%d conf_sha256=%s time=%.3f\n' % (os.getpid(), digest, time.time()))
    while True:
        signal.pause()


if __name__ == '__main__':
    sys.exit(main())
