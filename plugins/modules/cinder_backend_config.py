#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: cinder_backend_config
short_description: Set or unset options in backend sections of cinder.conf (or any oslo.config ini file)
version_added: 1.0.0
description:
  - Edits an oslo.config style configuration file such as C(cinder.conf) or C(glance-api.conf) in place.
  - Sections are selected by name (O(sections)), by the backend driver (O(volume_driver)), or both. With
    O(volume_driver), every backend named in C([DEFAULT] enabled_backends) whose C(volume_driver) is one of the
    given class paths is selected, so a task can say "all NFS backends" without knowing their names.
  - In the selected sections, the options in O(set) get the given values and the options in O(unset) are removed.
  - "The file is read with oslo.config's own rules (C(key = value) or C(key: value), continuation lines, repeated
    sections, the last assignment wins)."
  - Only the lines of the assignments that change are touched; comments,
    blank lines, order, line endings and all other sections stay byte for byte as they were.
  - A value given as a boolean, a number, a list or a dict is compared with the file the way oslo.config converts
    it, so C(nfs_snapshot_support = True) already satisfies V(true) and is left alone.
  - The new content is written to a temporary file in the same directory, synced, and renamed over the file
    (a symbolic link is followed and its target replaced), keeping the file's owner, group and mode unless
    O(owner), O(group) or O(mode) say otherwise.
  - Without O(set) and O(unset) the module only reads, and returns the values of O(query) in the selected sections.
  - Secret values are never shown. In the diff, in RV(changes), RV(section_values), RV(fallback_values),
    RV(effective_values) and in the task's own arguments returned with the result, the value of an option named like
    a secret is replaced by C(<hidden>) (in the diff by C(<hidden, changed>) on an assignment the task changed, so
    the diff still shows which line changed; in RV(changes) the new value is C(<hidden, changed>)).
  - "An option is secret when its name (lower-cased, C(-) and C(.) read as C(_)) contains C(password), C(passwd),
    C(passphrase), C(secret), C(token), C(credential), C(private_key), C(privatekey), C(api_key) or C(apikey), or
    has a C(_)-separated word C(key), C(keys), C(pass), C(pwd), C(psk), C(pw), C(sshkey), C(privkey), C(authkey),
    C(hostkey), C(secretkey), C(accesskey) or C(enckey). This is deliberately wide: C(rbd_secret_uuid), C(fixed_key),
    C(memcache_secret_key), C(ssl_key_file) are masked too."
  - "In every other value, the credentials of a URL are masked: everything between the first C(scheme://) and the
    last C(@) (C(rabbit://<hidden>@host:5672/), for several hosts the hosts before the last one too), and query
    parameters named like secrets (C(?password=<hidden>)). For options whose name has the word C(url), C(uri),
    C(connection) or C(dsn) (C(transport_url), C([database] connection)) a value without a scheme is masked up to
    its last C(@) as well. Commented-out assignments (C(#admin_password = ...)) are masked by the same rules."
  - Masking is for display only; the file gets the values given, and values are compared unmasked.
  - When O(owner) or O(group) changes together with an octal O(mode), the file first gets the intersection of its
    mode and the new one, then its new owner and group, then the new mode, so that no user or group can read it
    (it holds passwords), even for a moment, unless the old or the new attributes let it. A symbolic O(mode) is
    applied in Ansible's usual order (owner, group, mode).
  - A file that is not valid UTF-8 is refused with its line number, and nothing is written; oslo.config reads
    configuration files as UTF-8 and the service would not start with it.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details:
      - Returns the changes, the values the file would hold and the diff without writing.
  diff_mode:
    support: full
    details:
      - The whole file before and after, with secret values and URL credentials masked (see the description).
  idempotent:
    support: full
options:
  path:
    description:
      - The configuration file. It must exist.
    type: path
    required: true
    aliases: [dest]
  sections:
    description:
      - Names of the sections to edit, for example C(nfs-1) or C(DEFAULT). Compared as oslo.config does
        (lower-cased, except C(DEFAULT)).
      - Each must exist unless O(create_sections=true).
      - With O(volume_driver) too, each named section must use one of those drivers, else the task fails.
      - At least one of O(sections) and O(volume_driver) is required.
    type: list
    elements: str
  volume_driver:
    description:
      - Select the enabled backends (C([DEFAULT] enabled_backends)) whose C(volume_driver) is one of these class
        paths, for example C(cinder.volume.drivers.nfs.NfsDriver). A backend section without C(volume_driver)
        uses the one of the O(fallback_section).
      - The task fails when no enabled backend uses one of them.
    type: list
    elements: str
  require_enabled:
    description:
      - Fail when a section named in O(sections) is not listed in C([DEFAULT] enabled_backends).
    type: bool
    default: false
  create_sections:
    description:
      - Add a section named in O(sections) that does not exist (at the end of the file).
    type: bool
    default: false
  set:
    description:
      - Options to set in every selected section, name to value.
      - Booleans are written C(true)/C(false), lists comma separated, dicts as C(key:value) pairs separated by
        commas (oslo.config's DictOpt). Strings are written as they are (quoted only when oslo.config would
        otherwise strip them).
    type: dict
    default: {}
  unset:
    description:
      - Options to remove from every selected section (every assignment of them in that section).
    type: list
    elements: str
    default: []
  query:
    description:
      - More options whose values to return in RV(section_values) and RV(fallback_values), without changing them.
    type: list
    elements: str
    default: []
  fallback_section:
    description:
      - The section a backend option falls back to when the backend section does not set it. Cinder uses
        C(backend_defaults). Used to find a backend's C(volume_driver) and returned as RV(fallback_values).
      - Set to V(null) (or an empty string) to consult no other section.
    type: str
    default: backend_defaults
  backup:
    description:
      - Keep a timestamped copy of the file before changing it.
    type: bool
    default: false
notes:
  - The values are not checked against the service's option definitions; a role can run the service's own check
    afterwards (see the C(volsnap.openstack.cinder_nfs_snapshots) role).
  - A file that oslo.config cannot parse (for example an indented line that follows no assignment) is refused with
    the line number, and nothing is written.
'''

EXAMPLES = r'''
- name: Enable qcow2 snapshots on every NFS backend of cinder.conf
  volsnap.openstack.cinder_backend_config:
    path: /etc/cinder/cinder.conf
    volume_driver:
      - cinder.volume.drivers.nfs.NfsDriver
    set:
      nfs_snapshot_support: true
      nfs_qcow2_volumes: true
      nas_secure_file_operations: 'false'
  register: nfs_conf

- name: Enable clone optimization on two named RBD backends (they must be RBD backends)
  volsnap.openstack.cinder_backend_config:
    path: /etc/cinder/cinder.conf
    sections: [ceph-ssd, ceph-hdd]
    volume_driver: [cinder.volume.drivers.rbd.RBDDriver]
    require_enabled: true
    set:
      enable_clone_optimization: true

- name: Glance multi-store settings in glance-api.conf
  volsnap.openstack.cinder_backend_config:
    path: /etc/glance/glance-api.conf
    sections: [DEFAULT]
    fallback_section: null
    set:
      enabled_backends:
        rbd: rbd
        file: file
      show_multiple_locations: true

- name: Read the values only
  volsnap.openstack.cinder_backend_config:
    path: /etc/cinder/cinder.conf
    volume_driver: [cinder.volume.drivers.nfs.NfsDriver]
    query: [nfs_snapshot_support, nas_secure_file_operations]
  register: current
'''

RETURN = r'''
path:
  description: The file that was edited (the target when O(path) is a symbolic link).
  returned: always
  type: str
sections:
  description: The selected sections, as their names are written in the file.
  returned: always
  type: list
  elements: str
  sample: [nfs-1, nfs-2]
changes:
  description: One item per option changed (or that would be changed in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    section:
      description: The section.
      type: str
    option:
      description: The option.
      type: str
    before:
      description: The value oslo.config read before, null when the option was not set.
      type: str
    after:
      description: The value written, null when the option was removed.
      type: str
section_values:
  description:
    - For each selected section, the value oslo.config reads for each option of O(set), O(unset) and O(query)
      after the change (null when the section does not set it). In check mode, the values the file would hold.
  returned: always
  type: dict
  sample: {"nfs-1": {"nfs_snapshot_support": "true", "nas_secure_file_operations": null}}
fallback_values:
  description: The same options in O(fallback_section) after the change; empty when O(fallback_section) is null.
  returned: always
  type: dict
  sample: {"nas_secure_file_operations": "auto"}
effective_values:
  description:
    - For each selected section, the value of each option of RV(section_values) as a backend reads it after the
      change, the section's own value or else the O(fallback_section)'s; null when neither sets it (the service
      then uses the option's default).
  returned: always
  type: dict
  sample: {"nfs-1": {"nfs_snapshot_support": "true", "nas_secure_file_operations": "auto"}}
enabled_backends:
  description: The names in C([DEFAULT] enabled_backends).
  returned: always
  type: list
  elements: str
volume_drivers:
  description: The C(volume_driver) of each selected section (with the O(fallback_section) fallback), or null.
  returned: always
  type: dict
  sample: {"nfs-1": "cinder.volume.drivers.nfs.NfsDriver"}
content_changed:
  description: Whether the content changed (or would change); C(changed) also covers owner, group and mode.
  returned: always
  type: bool
backup_file:
  description: The backup copy, when O(backup=true) and the content changed.
  returned: when a backup was made
  type: str
'''

import os
import stat

from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.oslo_ini import (
    BACKEND_DEFAULTS_SECTION,
    edit_request,
    edit_summary,
    encode,
    mask_given,
    narrow_mode_first,
    plan_edit,
    read_config,
    write_atomic_bytes,
)


class CinderBackendConfig(VolsnapModule):
    argument_spec = dict(
        path=dict(type='path', required=True, aliases=['dest']),
        sections=dict(type='list', elements='str'),
        volume_driver=dict(type='list', elements='str'),
        require_enabled=dict(type='bool', default=False),
        create_sections=dict(type='bool', default=False),
        set=dict(type='dict', default={}),
        unset=dict(type='list', elements='str', default=[]),
        query=dict(type='list', elements='str', default=[]),
        fallback_section=dict(type='str', default=BACKEND_DEFAULTS_SECTION),
        backup=dict(type='bool', default=False),
    )
    module_kwargs = dict(
        add_file_common_args=True,
        required_one_of=[('sections', 'volume_driver')],
    )

    def run_module(self):
        params = self.params
        set_values = dict(params['set'] or {})
        # The task's arguments come back in results (invocation) and failures: secrets given in set are masked
        # there too, from here on.
        self.module.params['set'] = mask_given(set_values)
        path, text = read_config(params['path'])
        plan = plan_edit(text, edit_request(params, set_values), path=params['path'])
        # Secret values are masked in everything returned (see the module's notes).
        result, content_diff = edit_summary(plan, path)
        diffs = []
        if content_diff is not None:
            diffs.append(content_diff)
            if not self.check_mode:
                if params['backup']:
                    result['backup_file'] = self.module.backup_local(path)
                write_atomic_bytes(path, encode(plan.after))
        attr_diff = dict(before_header='%s (attributes)' % path, after_header='%s (attributes)' % path,
                         before={}, after={})
        file_args = self.module.load_file_common_arguments(params, path=path)
        narrowed = None
        if not self.check_mode:
            # owner/group and mode together: through the intersection of both modes (the file holds passwords)
            narrowed = narrow_mode_first(path, file_args.get('mode'), file_args.get('owner'), file_args.get('group'))
        changed = self.module.set_fs_attributes_if_different(file_args, plan.changed, diff=attr_diff)
        if narrowed is not None:
            # the diff shows the mode the file had, not the intermediate one
            attr_diff['before']['mode'] = '0%03o' % narrowed
            attr_diff['after']['mode'] = '0%03o' % stat.S_IMODE(os.stat(path).st_mode)
            changed = True
        if attr_diff['before'] != attr_diff['after']:
            diffs.append(attr_diff)
        if diffs:
            self.diff = diffs  # type: ignore[assignment]  # Ansible accepts a list of diffs
        result['changed'] = changed
        return result


def main():
    CinderBackendConfig().execute()


if __name__ == '__main__':
    main()
