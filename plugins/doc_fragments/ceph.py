# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Modules that talk to a Ceph cluster through librados: the options as librados and Cinder's RBD driver
    # (rbd_ceph_conf, rbd_user, rbd_keyring_conf, rados_connect_timeout) name them.
    DOCUMENTATION = r'''
options:
  ceph_conf:
    description:
      - The Ceph configuration file of the cluster (it names the monitors), as Cinder's C(rbd_ceph_conf).
    type: path
    default: /etc/ceph/ceph.conf
  ceph_user:
    description:
      - The cephx client name without the C(client.) prefix (librados' C(rados_id)), as Cinder's C(rbd_user), for
        example C(cinder). A leading C(client.) is accepted and dropped.
      - Unset means librados' default, C(client.admin).
    type: str
  keyring:
    description:
      - The keyring file holding the key of O(ceph_user), as Cinder's C(rbd_keyring_conf).
      - Unset means librados' search path (C(/etc/ceph/<cluster>.client.<user>.keyring), C(/etc/ceph/keyring), ...).
    type: path
  rados_connect_timeout:
    description:
      - Seconds to wait for the cluster, as Cinder's C(rados_connect_timeout). It bounds the connection and every
        monitor and OSD operation, so an unreachable cluster fails with a clear error instead of hanging.
        V(0) waits forever.
    type: int
    default: 30
requirements:
  - The Ceph Python bindings C(rados) and C(rbd) (Debian and Ubuntu packages C(python3-rados) and C(python3-rbd)) on the
    host that runs the module. They are built for the system Python 3.
notes:
  - The cephx caps the module needs are given in its description; a missing cap is reported with the exact cap to add.
'''
