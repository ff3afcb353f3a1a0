#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ceph_keyring
short_description: Write or remove the keyring file of a cephx client, with explicit owner, group and mode
version_added: 1.0.0
description:
  - Writes the keyring file of one cephx client as Ceph writes it (C(ceph auth get -o)), a C([client.<name>]) section
    with the key and, with O(caps), the caps.
  - Content, owner, group and mode are each compared with the file on disk; the task reports C(changed) when any of
    them differs, and RV(changes) says which. A second run with the same options changes nothing.
  - Content is compared by meaning (the same sections, keys, and caps granting the same), so a keyring that
    C(ceph auth get -o) wrote with other white space, quoting or grant order is left as it is.
  - The file is replaced atomically. The new key is written into a temporary file in the same directory that is
    created C(0600) and given its final owner, group and mode before the key is written; it is fsynced and renamed
    over the old file. The path never holds the new key with a looser mode than asked, and an interrupted run leaves
    the old file or the new one (its temporary file is removed by the next run).
  - The key is never returned, shown in a diff or put in a message, neither the new key nor the old one in the file.
    The diff shows owner, group, mode and the file's text with every key replaced by C(<hidden>) (or
    C(<hidden, another key>) when the key changes), however its line is written (any case or spacing, quotes, C(:)
    for C(=), in any section or none, an inline C(;) or C(#) comment or other words after the key, shown as
    C(<hidden text>), or commented out). Section headers, caps lines and comments are shown with anything that
    looks like a key hidden; any other line of the old file is replaced by a placeholder as a whole.
  - "When owner or group and mode change together on an existing file, the mode first becomes the intersection of the
    old and the new mode, then owner and group change, then the new mode is set: no user or group can read the file,
    even for a moment, unless the old or the new attributes let it (C(0640 root:a) to C(0660 root:b) never goes
    through C(0660 root:a), C(0640 root:a) to C(0600 root:b) never through C(0640 root:b))."
  - A symbolic link at O(path) is refused, never followed or replaced.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
attributes:
  check_mode:
    support: full
    details:
      - Compares content, owner, group and mode and reports what would change; nothing is written.
      - O(key) may be left out in check mode only (for a client a check-mode run has not created yet); the file is then
        reported as changed.
  diff_mode:
    support: full
    details:
      - Owner, group, mode and the file's text with the key hidden, before and after.
  idempotent:
    support: full
options:
  path:
    description:
      - The keyring file, usually C(/etc/ceph/<cluster>.client.<name>.keyring) (where librados looks for it).
      - Its directory must exist.
    type: path
    required: true
    aliases: [dest]
  name:
    description:
      - The client, as its id (V(cinder)) or its entity name (V(client.cinder)).
    type: str
    required: true
  key:
    description:
      - The client's secret as C(ceph auth get-key) prints it (for example the RV(volsnap.openstack.ceph_auth_client#module:key)
        of M(volsnap.openstack.ceph_auth_client) with O(volsnap.openstack.ceph_auth_client#module:return_key)).
      - Required with O(state=present), except in check mode.
    type: str
  caps:
    description:
      - Caps to write into the file as C(caps <type> = "...") lines, as C(ceph auth get -o) does. They only document the
        caps (the cluster enforces its own); leave them out for a plain client keyring.
    type: dict
  state:
    description:
      - V(present) writes the file; V(absent) removes it (and temporary files an interrupted run left beside it).
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - Owner of the file (name or uid). Unset keeps the current owner (or the user running the module for a new file).
    type: str
  group:
    description:
      - Group of the file (name or gid), for example the service's group (V(cinder)) with O(mode=0640).
      - Unset keeps the current group (or the primary group of the user running the module for a new file).
    type: str
  mode:
    description:
      - Permission bits, octal (V("0600"), V("0640")). Quote it in YAML. Symbolic modes and setuid, setgid or sticky
        bits are refused.
    type: raw
    default: '0600'
notes:
  - root reads any file whatever its mode; test that a service user can or cannot read the file as that user.
seealso:
  - module: volsnap.openstack.ceph_auth_client
'''

EXAMPLES = r'''
- name: Read the key of client.cinder on a monitor host
  volsnap.openstack.ceph_auth_client:
    name: cinder
    return_key: true
  delegate_to: "{{ groups['ceph_mon'][0] }}"
  run_once: true
  no_log: true
  register: cinder_client

- name: Cinder's keyring, readable by the cinder group only
  volsnap.openstack.ceph_keyring:
    path: /etc/ceph/ceph.client.cinder.keyring
    name: cinder
    key: "{{ cinder_client.key }}"
    owner: root
    group: cinder
    mode: "0640"
  no_log: true

- name: Remove the keyring from a host that does not need it any more
  volsnap.openstack.ceph_keyring:
    path: /etc/ceph/ceph.client.cinder.keyring
    name: cinder
    state: absent
'''

RETURN = r'''
path:
  description: The keyring file.
  returned: always
  type: str
entity:
  description: The client's entity name.
  returned: always
  type: str
  sample: client.cinder
state:
  description: V(file) or V(absent), after the task (or as it would be, in check mode).
  returned: always
  type: str
changes:
  description:
    - What differed (and was changed, or would be in check mode), any of V(created), V(content), V(owner), V(group),
      V(mode), V(removed), V(stale temporary files), V(attributes). Empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: [owner, mode]
owner:
  description: Owner of the file after the task.
  returned: when the file is present
  type: str
group:
  description: Group of the file after the task.
  returned: when the file is present
  type: str
mode:
  description: Mode of the file after the task.
  returned: when the file is present
  type: str
  sample: '0640'
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.keyring import KeyringRequest, apply_keyring, scrub_value
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule


class CephKeyring(VolsnapModule):
    argument_spec = dict(
        path=dict(type='path', required=True, aliases=['dest']),
        name=dict(type='str', required=True),
        key=dict(type='str', no_log=True),
        caps=dict(type='dict'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        owner=dict(type='str'),
        group=dict(type='str'),
        mode=dict(type='raw', default='0600'),
    )

    def fail(self, msg, **details):
        # no message may carry key material, whatever produced it
        self.module.fail_json(msg=scrub_value(msg), **scrub_value(details))

    def set_attributes(self, path, owner, group, mode):
        file_args = self.module.load_file_common_arguments(dict(path=path, owner=owner, group=group, mode=mode))
        return self.module.set_fs_attributes_if_different(file_args, False, expand=False)

    def run_module(self):
        params = self.params
        request = KeyringRequest(path=params['path'], name=params['name'], state=params['state'], key=params['key'],
                                 caps=params['caps'], owner=params['owner'], group=params['group'],
                                 mode=params['mode'])
        plan = apply_keyring(request, self.check_mode, self.set_attributes)
        self.diff = plan.diff()
        return plan.result()


def main():
    CephKeyring().execute()


if __name__ == '__main__':
    main()
