#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check NFS backend sections of a cinder.conf with Cinder's own code (run by the cinder_nfs_snapshots role).

    cinder_nfs_check.py [--set BACKEND:OPTION=VALUE ...] <cinder.conf> <backend> [<backend> ...]

For every backend, builds the backend's configuration exactly as cinder-volume does
(cinder.volume.configuration.Configuration, values from the backend section with the
[backend_defaults] fallback, converted by oslo.config with Cinder's option definitions), creates
the NfsDriver with it, and runs the checks NfsDriver.do_setup runs that need no mounted share:
RemoteFSDriver.do_setup (nas_secure_* must be auto/true/false) and
NfsDriver._check_snapshot_support(setup_checking=True) (no snapshots with secure file operations).
``--set`` overrides a backend's option (oslo.config set_override, converted with the option's type):
the role checks the values it is about to write before it writes them.

Prints one JSON object on stdout: {"ok": bool, "backends": {name: {"ok": .., "error": .., "values": {..}}}}
and exits 0 when every backend passes, 1 when one fails, 2 when Cinder cannot be imported.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

OPTIONS = ('nfs_snapshot_support', 'nfs_qcow2_volumes', 'nas_secure_file_operations',
           'nas_secure_file_permissions', 'nfs_shares_config', 'nfs_mount_point_base')


def parse_args(argv):
    overrides = []
    args = list(argv[1:])
    while args and args[0] == '--set':
        if len(args) < 2 or ':' not in args[1] or '=' not in args[1]:
            raise ValueError('--set needs BACKEND:OPTION=VALUE')
        target, value = args[1].split('=', 1)
        backend, option = target.split(':', 1)
        overrides.append((backend, option, value))
        args = args[2:]
    if len(args) < 2:
        raise ValueError('a configuration file and at least one backend are required')
    return overrides, args[0], args[1:]


def main(argv):
    try:
        overrides, path, backends = parse_args(argv)
    except ValueError as exc:
        sys.stderr.write('usage: cinder_nfs_check.py [--set BACKEND:OPTION=VALUE ...] <cinder.conf> <backend> [...]'
                         ': %s\n' % exc)
        return 2
    warnings.simplefilter('ignore')
    try:
        from oslo_config import cfg
        from cinder.volume import configuration
        from cinder.volume import driver as volume_driver
        from cinder.volume.drivers import nfs, remotefs
    except ImportError as exc:
        print(json.dumps({'ok': False, 'error': 'cannot import Cinder: %s' % exc}))
        return 2

    conf = cfg.CONF
    conf([], project='cinder', default_config_files=[os.path.abspath(path)])
    report = {'ok': True, 'config_file': path, 'overrides': ['%s:%s=%s' % item for item in overrides], 'backends': {}}
    for backend in backends:
        entry = {'ok': True, 'error': None, 'values': {}}
        try:
            backend_conf = configuration.Configuration(volume_driver.volume_opts, config_group=backend)
            driver = nfs.NfsDriver(configuration=backend_conf, host='volsnap-check@%s' % backend)
            for target, option, value in overrides:
                if target == backend:
                    conf.set_override(option, value, group=backend)
            for option in OPTIONS:
                value = driver.configuration.safe_get(option)
                entry['values'][option] = value
            # what cinder-volume does at start, before it mounts anything
            remotefs.RemoteFSDriver.do_setup(driver, None)
            driver._check_snapshot_support(setup_checking=True)  # pylint: disable=protected-access
            entry['values']['nas_secure_file_operations'] = driver.configuration.nas_secure_file_operations
        except Exception as exc:  # pylint: disable=broad-except
            entry['ok'] = False
            entry['error'] = '%s: %s' % (type(exc).__name__, exc)
            report['ok'] = False
        report['backends'][backend] = entry
    print(json.dumps(report, default=str, sort_keys=True))
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
