#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ceph_auth_client
short_description: Create, update or remove a cephx client and its caps
version_added: 1.0.0
description:
  - Manages one cephx client (C(client.<name>)) in the auth database of a Ceph cluster through the monitors'
    command interface (librados C(mon_command)), as C(ceph auth get-or-create), C(ceph auth caps) and
    C(ceph auth rm) do.
  - A missing client is created with O(caps) (C(auth get-or-create)). The caps of an existing client are changed
    (C(auth caps)) only when they differ from the wanted ones; grants are compared one by one, so white space and the
    order of the grants in a cap do not count as a difference.
  - The key is never printed, never put in a diff or message, and returned only with O(return_key), which needs
    C(no_log) on the task. Write keyring files with M(volsnap.openstack.ceph_keyring).
  - Cap changes reach only new client connections; running services keep the caps they connected with until they
    reconnect (restart them).
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.ceph
attributes:
  check_mode:
    support: full
    details:
      - Reads the client and reports what would be created, changed or removed; nothing is changed.
      - With O(return_key), the key of a client that exists is returned; a client that would be created has none yet.
  diff_mode:
    support: full
    details:
      - Shows whether the client exists and its caps, before and after. Never the key.
  idempotent:
    support: full
options:
  name:
    description:
      - The client, as its id (V(cinder)) or its full entity name (V(client.cinder)). Only C(client.) entities are
        managed.
    type: str
    required: true
  state:
    description:
      - V(present) creates the client when it is missing and gives it O(caps).
      - V(absent) removes the client and its key from the cluster (C(ceph auth rm)). Keyring files holding the key stop
        working; remove them with M(volsnap.openstack.ceph_keyring).
    type: str
    choices: [present, absent]
    default: present
  caps:
    description:
      - The caps, one string per daemon type (C(mon), C(osd), C(mgr), C(mds)), for example
        C(mon) V(profile rbd) and C(osd) V(profile rbd pool=volumes, profile rbd pool=images).
      - With O(caps_mode=exact) these are all the caps the client ends with; a type left out loses its caps.
      - Unset means the caps are not managed (a new client is created without caps).
    type: dict
  caps_mode:
    description:
      - V(exact) makes the client's caps equal to O(caps).
      - V(merge) adds the grants of O(caps) the client lacks and keeps everything else it has. For example Cinder's
        client gets write access to Glance's pool with an C(osd) cap of V(profile rbd pool=images) without losing the
        grants it holds on other pools.
    type: str
    choices: [exact, merge]
    default: exact
  return_key:
    description:
      - Return the client's key as RV(key), for example to hand it to M(volsnap.openstack.ceph_keyring) on hosts
        that have no admin access to the cluster.
      - The task must have C(no_log=true); the module refuses otherwise, so the key never reaches a log or the
        screen.
    type: bool
    default: false
notes:
  - The client that connects (O(ceph_user), usually C(admin)) needs mon C(allow *) or at least the rights to run the
    C(auth) commands.
seealso:
  - module: volsnap.openstack.ceph_keyring
  - name: Ceph user management
    description: The cephx users, keyrings and caps.
    link: https://docs.ceph.com/en/latest/rados/operations/user-management/
'''

EXAMPLES = r'''
- name: Cinder's client, with write access to the volumes and Glance's images pool
  volsnap.openstack.ceph_auth_client:
    name: cinder
    caps:
      mon: profile rbd
      osd: profile rbd pool=volumes, profile rbd pool=vms, profile rbd pool=images
      mgr: profile rbd pool=volumes, profile rbd pool=vms

- name: Add write access to Glance's pool to whatever client.cinder already has
  volsnap.openstack.ceph_auth_client:
    name: cinder
    caps:
      osd: profile rbd pool=images
    caps_mode: merge

- name: Read the key of client.glance to write its keyring on the Glance hosts
  volsnap.openstack.ceph_auth_client:
    name: glance
    caps:
      mon: profile rbd
      osd: profile rbd pool=images
    return_key: true
  no_log: true
  register: glance_client

- name: Remove a client that is not used any more
  volsnap.openstack.ceph_auth_client:
    name: old-backup
    state: absent
'''

RETURN = r'''
entity:
  description: The full entity name.
  returned: always
  type: str
  sample: client.cinder
exists:
  description: Whether the client exists after the task (in check mode, whether it would).
  returned: always
  type: bool
caps:
  description: The client's caps after the task (in check mode, the caps it would have); empty when it does not exist.
  returned: always
  type: dict
  sample: {"mon": "profile rbd", "osd": "profile rbd pool=volumes, profile rbd pool=images"}
commands:
  description: The C(ceph) command lines equivalent to what was changed (or would be in check mode); empty when nothing.
  returned: always
  type: list
  elements: str
  sample: ["ceph auth caps client.cinder mon 'profile rbd' osd 'profile rbd pool=volumes, profile rbd pool=images'"]
key:
  description:
    - The client's key. Only with O(return_key); null in check mode when the client does not exist yet.
  returned: when O(return_key=true)
  type: str
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import (
    ceph_argument_spec,
    client_name,
    connect,
    rados_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.cephx import CAPS_MODES, STATES, run_client
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.keyring import scrub_value
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule


class CephAuthClient(VolsnapModule):
    argument_spec = ceph_argument_spec(
        name=dict(type='str', required=True),
        state=dict(type='str', choices=list(STATES), default='present'),
        caps=dict(type='dict'),
        caps_mode=dict(type='str', choices=list(CAPS_MODES), default='exact'),
        return_key=dict(type='bool', default=False, no_log=False),
    )

    def dependencies(self):
        return (rados_dependency(),)

    def fail(self, msg, **details):
        # no message may carry key material, whatever produced it (the monitors' own messages included)
        self.module.fail_json(msg=scrub_value(msg), **scrub_value(details))

    def run_module(self):
        params = self.params
        if params['return_key'] and not self.module.no_log:
            raise VolsnapError('return_key needs no_log: true on the task, so that the key of %s never reaches a log '
                               'or the screen' % params['name'])
        outcome = run_client(
            connect=connect, ceph_conf=params['ceph_conf'], ceph_user=params['ceph_user'],
            keyring=params['keyring'], timeout=params['rados_connect_timeout'], name=params['name'],
            state=params['state'], caps=params['caps'], caps_mode=params['caps_mode'],
            return_key=params['return_key'], check_mode=self.check_mode, admin=client_name(params['ceph_user']))
        diff = outcome.diff()
        self.set_diff(diff['before'], diff['after'])
        result = outcome.result()
        if params['return_key']:
            result['key'] = outcome.key
        return result


def main():
    CephAuthClient().execute()


if __name__ == '__main__':
    main()
