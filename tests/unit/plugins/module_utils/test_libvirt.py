# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the pure part of _libvirt: parse_disks, find_disk and DiskInfo; LazyLibvirt (the lazy connection)."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import DeclaredChain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import (
    DiskInfo,
    LazyLibvirt,
    Libvirt,
    find_disk,
    parse_disks,
)

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
OTHER_ID = 'ffffffff-eeee-4ddd-8ccc-bbbbbbbbbbbb'
SHARE = '/var/lib/nova/mnt/abcdef'
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'

DOMAIN = """<domain type='kvm' id='3'>
  <name>instance-00000001</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/uuid/disk' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{share}/volume-{vol}.{snap2}' index='4'/>
      <backingStore type='file' index='3'>
        <format type='qcow2'/>
        <source file='{share}/volume-{vol}.{snap1}'/>
        <backingStore type='file' index='2'>
          <format type='raw'/>
          <source file='{share}/volume-{vol}'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vdb' bus='virtio'/>
      <serial>{vol}</serial>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/tmp/config.iso'/>
      <target dev='hda' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='volumes/volume-{other}'>
        <host name='10.0.0.1' port='6789'/>
      </source>
      <target dev='vdc' bus='virtio'/>
      <serial>{other}</serial>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/sdz'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
  </devices>
</domain>
""".format(share=SHARE, vol=VOL_ID, other=OTHER_ID, snap1=SNAP1, snap2=SNAP2)


def by_target(disks):
    return dict((d.target, d) for d in disks)


def test_parse_disks_lists_disks_not_cdroms():
    disks = parse_disks(DOMAIN)
    assert [d.target for d in disks] == ['vda', 'vdb', 'vdc', 'vdd']
    assert 'hda' not in by_target(disks)


def test_nested_backing_store_chain():
    disk = by_target(parse_disks(DOMAIN))['vdb']
    assert disk.serial == VOL_ID
    assert disk.source == '%s/volume-%s.%s' % (SHARE, VOL_ID, SNAP2)
    assert disk.format == 'qcow2'
    assert disk.disk_type == 'file'
    assert disk.chain == [
        ('%s/volume-%s.%s' % (SHARE, VOL_ID, SNAP2), 'qcow2'),
        ('%s/volume-%s.%s' % (SHARE, VOL_ID, SNAP1), 'qcow2'),
        ('%s/volume-%s' % (SHARE, VOL_ID), 'raw'),
    ]
    assert disk.chain_complete is True


def test_empty_backing_store_terminates_complete_chain():
    disk = by_target(parse_disks(DOMAIN))['vda']
    assert disk.chain == [('/var/lib/nova/instances/uuid/disk', 'qcow2')]
    assert disk.chain_complete is True
    assert disk.serial is None


def test_missing_backing_store_is_incomplete():
    disk = by_target(parse_disks(DOMAIN))['vdd']
    assert disk.source == '/dev/sdz'
    assert disk.disk_type == 'block'
    assert disk.chain == [('/dev/sdz', 'raw')]
    assert disk.chain_complete is False


def test_backing_store_without_terminator_is_incomplete():
    xml = """<domain><devices><disk type='file' device='disk'>
      <driver type='qcow2'/><source file='/s/top'/>
      <backingStore type='file'><format type='qcow2'/><source file='/s/base'/></backingStore>
      <target dev='vda'/></disk></devices></domain>"""
    disk = parse_disks(xml)[0]
    assert disk.chain == [('/s/top', 'qcow2'), ('/s/base', 'qcow2')]
    assert disk.chain_complete is False


def test_backing_store_without_format():
    xml = """<domain><devices><disk type='file'>
      <source file='/s/top'/>
      <backingStore type='file'><source file='/s/base'/><backingStore/></backingStore>
      <target dev='vda'/></disk></devices></domain>"""
    disk = parse_disks(xml)[0]
    assert disk.format is None
    assert disk.chain == [('/s/top', None), ('/s/base', None)]
    assert disk.chain_complete is True


def test_disk_defaults():
    xml = "<domain><devices><disk><source file='/s/x'/></disk></devices></domain>"
    disk = parse_disks(xml)[0]
    assert disk.target == ''
    assert disk.disk_type == 'file'
    assert disk.serial is None


def test_serial_whitespace_is_stripped():
    xml = ("<domain><devices><disk type='file' device='disk'><source file='/s/x'/><target dev='vda'/>"
           "<serial>\n  %s  \n</serial></disk></devices></domain>" % VOL_ID)
    assert parse_disks(xml)[0].serial == VOL_ID


def test_domain_without_disks():
    assert parse_disks('<domain><devices/></domain>') == []
    assert parse_disks('<domain/>') == []


def test_network_disk_has_no_source_path():
    disk = by_target(parse_disks(DOMAIN))['vdc']
    assert disk.disk_type == 'network'
    assert disk.source is None
    assert disk.chain == []


def test_declared_normalises_formats():
    disk = DiskInfo(target='vda', serial=None, source='/s/top', format='qcow2', disk_type='file',
                    chain=[('/s/top', 'qcow2'), ('/s/mid', 'vpc'), ('/s/base', 'file')], chain_complete=False)
    declared = disk.declared()
    assert isinstance(declared, DeclaredChain)
    assert declared.layers == [('/s/top', 'qcow2'), ('/s/mid', 'vhd'), ('/s/base', 'raw')]
    assert declared.complete is False


def test_find_disk_by_serial():
    disk = find_disk(DOMAIN, VOL_ID)
    assert disk.target == 'vdb'
    assert disk.declared().layers[2] == ('%s/volume-%s' % (SHARE, VOL_ID), 'raw')
    assert disk.declared().complete is True


def test_find_disk_by_target():
    assert find_disk(DOMAIN, 'vda').source == '/var/lib/nova/instances/uuid/disk'
    assert find_disk(DOMAIN, 'vdd').source == '/dev/sdz'


def test_find_disk_no_match_lists_disks():
    with pytest.raises(VolsnapError) as exc:
        find_disk(DOMAIN, 'vdz')
    message = str(exc.value)
    assert "'vdz'" in message
    assert 'vda (serial -)' in message
    assert 'vdb (serial %s)' % VOL_ID in message
    assert 'vdc (serial %s)' % OTHER_ID in message
    assert 'hda' not in message


def test_find_disk_no_disks():
    with pytest.raises(VolsnapError) as exc:
        find_disk('<domain><devices/></domain>', 'vda')
    assert 'none' in str(exc.value)


def test_find_disk_cdrom_not_matched():
    with pytest.raises(VolsnapError):
        find_disk(DOMAIN, 'hda')


def test_find_disk_network_refused():
    with pytest.raises(VolsnapError) as exc:
        find_disk(DOMAIN, OTHER_ID)
    assert 'network' in str(exc.value)
    assert 'vdc' in str(exc.value)


def test_find_disk_ambiguous():
    xml = """<domain><devices>
      <disk type='file'><source file='/s/a'/><target dev='vda'/><serial>{id}</serial></disk>
      <disk type='file'><source file='/s/b'/><target dev='vdb'/><serial>{id}</serial></disk>
    </devices></domain>""".format(id=VOL_ID)
    with pytest.raises(VolsnapError) as exc:
        find_disk(xml, VOL_ID)
    assert 'more than one' in str(exc.value)
    assert find_disk(xml, 'vdb').source == '/s/b'


def test_find_disk_file_without_source():
    xml = "<domain><devices><disk type='file' device='disk'><target dev='vda'/></disk></devices></domain>"
    with pytest.raises(VolsnapError):
        find_disk(xml, 'vda')


@pytest.mark.parametrize('xml', ['', '<domain>', 'not xml at all', '<domain><devices></domain>'])
def test_invalid_xml(xml):
    with pytest.raises(VolsnapError) as exc:
        parse_disks(xml)
    assert 'cannot be parsed' in str(exc.value)
    with pytest.raises(VolsnapError):
        find_disk(xml, 'vda')


def test_find_domain_and_is_running_with_libvirts_test_driver():
    """libvirt's own test driver (in-process, no daemon) holds one running domain named 'test'."""
    lv = Libvirt('test:///default')
    try:
        dom = lv.find_domain('test')
        assert dom is not None and dom.name() == 'test' and lv.is_running(dom)
        assert lv.find_domain(dom.UUIDString()).name() == 'test'
        assert lv.find_domain('no-such-domain') is None
        assert lv.find_domain('00000000-0000-4000-8000-000000000000') is None
    finally:
        lv.close()


def test_find_domain_raises_when_libvirt_cannot_answer(tmp_path):
    """'No such domain' and 'cannot ask' differ: only the first may make an online step work offline."""
    lv = Libvirt('test://%s' % (tmp_path / 'missing.xml'))
    with pytest.raises(VolsnapError, match='cannot connect to libvirt'):
        lv.find_domain('test')


def test_running_domains_using_skips_a_domain_that_vanishes_during_the_scan(monkeypatch):
    """A domain stopped between libvirt's listing and the XML read uses nothing: the scan goes on without it."""
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import libvirt
    assert libvirt is not None, 'the libvirt Python bindings are missing (make deps installs them)'
    lv = Libvirt('test:///default')
    try:
        conn = lv.conn
        disk = '/var/tmp/volsnap-unit/volume-%s' % VOL_ID
        transient = conn.createXML(
            "<domain type='test'><name>vanishing</name><memory>1024</memory><os><type>hvm</type></os>"
            "<devices><disk type='file' device='disk'><source file='%s'/><target dev='vdb'/></disk></devices>"
            "</domain>" % disk, 0)
        listed = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        assert 'vanishing' in [d.name() for d in listed]
        assert [(name, found.target) for name, found in lv.running_disks_using([disk])] == [('vanishing', 'vdb')]
        transient.destroy()  # a transient domain is gone once destroyed; the listed handle stays
        monkeypatch.setattr(conn, 'listAllDomains', lambda flags=0: listed)
        assert lv.running_disks_using([disk]) == []
    finally:
        lv.close()


# ---- LazyLibvirt: the connection of a request, made once on first use


def test_lazy_libvirt_calls_its_factory_once_on_first_use_across_threads():
    made = []
    barrier = threading.Barrier(4)

    def factory():
        made.append(object())
        return made[-1]

    lazy = LazyLibvirt(factory)
    assert made == []  # nothing is opened before it is used
    got = []

    def use():
        barrier.wait()
        got.append(lazy.get(True))

    threads = [threading.Thread(target=use) for _thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and got == made * 4 and lazy() is made[0]
    # handed on as a factory, it still gives the one connection
    assert LazyLibvirt(lazy, 'online group snapshots').get(True) is made[0] and len(made) == 1


def test_lazy_libvirt_without_bindings():
    calls = []
    lazy = LazyLibvirt(lambda: calls.append(1), 'online group snapshots')
    assert lazy.get(False) is None and lazy() is None
    with pytest.raises(VolsnapError, match=r'^online group snapshots need the libvirt Python bindings on this host '
                                           r'\(python3-libvirt\)$'):
        lazy.get(True)
    assert calls == [1]  # a factory without bindings is not asked again
    with pytest.raises(VolsnapError, match='^online snapshots need the libvirt Python bindings'):
        LazyLibvirt(lambda: None).get(True)
