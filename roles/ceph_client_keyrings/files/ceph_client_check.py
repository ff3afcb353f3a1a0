# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check what a cephx client can do, from the host and as the user that will use it.

Run with the system Python 3 (it needs python3-rados), normally as the service user, so the keyring's
owner, group and mode are part of what is checked (root reads any file). Its standard input is the
collection's classification of Ceph errors (``plugins/module_utils/_ceph/error_kinds.py``, the one
source of it, which needs only the standard library) followed by this script, as tasks/verify.yml sends them:

    cat error_kinds.py ceph_client_check.py | python3 - '<json>'

The JSON argument: ``conf`` (ceph.conf), ``name`` (client id without ``client.``), ``keyring``,
``timeout`` (seconds), and lists of pools: ``write`` (write, read back and remove an object must
work), ``read`` (reading must be allowed), ``deny_write`` (a write must fail with EPERM/EACCES),
``deny_read`` (a read must fail with EPERM/EACCES). ``tag`` makes the test object names unique.

Prints one JSON object: ``ok``, ``connected``, ``error`` and one entry per check (pool, operation,
expected, outcome, ok). Exit status 0 when every check had the expected outcome, 1 otherwise, 2 on
bad arguments. It prints no key and writes only its own test object, removed straight away.
"""

import json
import os
import sys

EXIT_BAD_ARGS = 2


# What error_kind (error_kinds.py, sent first) says of a failure -> the outcome this script reports.
OUTCOMES = {'permission': 'denied', 'not_found': 'missing'}


def error_kind_function():
    """``error_kind`` of error_kinds.py, defined by the text sent before this script."""
    try:
        return globals()['error_kind']
    except KeyError:
        raise SystemExit('ceph_client_check.py runs after error_kinds.py: cat error_kinds.py ceph_client_check.py '
                         '| python3 - <json arguments>')


def outcome_of(exc):
    """'denied' for a permission error, 'missing' for a missing pool, else the exception text."""
    return OUTCOMES.get(error_kind_function()(exc), '%s: %s' % (type(exc).__name__, exc))


def check_write(cluster, rados, pool, name, tag):
    obj = 'volsnap-check.%s.%s' % (name, tag)
    payload = ('volsnap ceph_client_keyrings check %s %s' % (name, tag)).encode()
    try:
        ioctx = cluster.open_ioctx(pool)
    except rados.Error as exc:
        return 'pool ' + outcome_of(exc)
    try:
        ioctx.write_full(obj, payload)
        try:
            if ioctx.read(obj, len(payload) + 1) != payload:
                return 'read back other data'
        finally:
            ioctx.remove_object(obj)
        return 'allowed'
    except rados.Error as exc:
        return outcome_of(exc)
    finally:
        ioctx.close()


def check_read(cluster, rados, pool, name, tag):
    obj = 'volsnap-check.%s.%s.absent' % (name, tag)
    try:
        ioctx = cluster.open_ioctx(pool)
    except rados.Error as exc:
        return 'pool ' + outcome_of(exc)
    try:
        ioctx.stat(obj)
        return 'allowed'
    except rados.ObjectNotFound:
        # The OSD looked the object up: the client may read the pool.
        return 'allowed'
    except rados.Error as exc:
        return outcome_of(exc)
    finally:
        ioctx.close()


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: cat error_kinds.py ceph_client_check.py | python3 - <json arguments>\n')
        return EXIT_BAD_ARGS
    error_kind_function()
    try:
        args = json.loads(argv[1])
        name = str(args['name'])
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write('bad arguments: %s\n' % exc)
        return EXIT_BAD_ARGS
    tag = str(args.get('tag') or os.getpid())
    timeout = int(args.get('timeout') or 20)
    result = {'ok': False, 'connected': False, 'client': 'client.' + name, 'uid': os.getuid(), 'checks': []}
    try:
        import rados
    except ImportError as exc:
        result['error'] = 'the rados Python bindings are missing (apt install python3-rados): %s' % exc
        print(json.dumps(result))
        return 1
    conf = {'keyring': args.get('keyring') or '', 'log_file': '', 'log_to_stderr': 'false',
            'err_to_stderr': 'false', 'admin_socket': '', 'client_mount_timeout': str(timeout),
            'rados_mon_op_timeout': str(timeout), 'rados_osd_op_timeout': str(timeout)}
    if not conf['keyring']:
        del conf['keyring']
    try:
        keyring = args.get('keyring')
        if keyring and not os.access(keyring, os.R_OK):
            raise OSError('%s is not readable by uid %d (gid %d, groups %s)'
                          % (keyring, os.getuid(), os.getgid(), sorted(os.getgroups())))
        cluster = rados.Rados(conffile=args.get('conf') or '/etc/ceph/ceph.conf', rados_id=name, conf=conf)
        cluster.connect(timeout=timeout)
    except (rados.Error, OSError) as exc:
        result['error'] = 'cannot connect as client.%s: %s: %s' % (name, type(exc).__name__, exc)
        print(json.dumps(result))
        return 1
    result['connected'] = True
    try:
        plan = [(pool, 'write', 'allowed') for pool in args.get('write') or []]
        plan += [(pool, 'read', 'allowed') for pool in args.get('read') or []]
        plan += [(pool, 'write', 'denied') for pool in args.get('deny_write') or []]
        plan += [(pool, 'read', 'denied') for pool in args.get('deny_read') or []]
        for pool, operation, expected in plan:
            probe = check_write if operation == 'write' else check_read
            outcome = probe(cluster, rados, pool, name, tag)
            result['checks'].append({'pool': pool, 'operation': operation, 'expected': expected,
                                     'outcome': outcome, 'ok': outcome == expected})
    finally:
        cluster.shutdown()
    result['ok'] = all(check['ok'] for check in result['checks'])
    print(json.dumps(result))
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
