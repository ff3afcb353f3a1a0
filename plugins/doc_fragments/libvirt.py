# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Options of modules that talk to libvirt on a compute host.
    DOCUMENTATION = r'''
options:
  libvirt_uri:
    description:
      - The libvirt connection URI, as Nova's C(connection_uri).
    type: str
    default: qemu:///system
requirements:
  - libvirt Python bindings (C(python3-libvirt) on Debian and Ubuntu) on the host, for the options that use libvirt.
'''
